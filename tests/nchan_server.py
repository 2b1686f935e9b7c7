"""Run the nginx + nchan relay config of ``deploy/nchan/`` on a free port (tests and the benchmark).

The config serves the ORIGINAL protocol only (envelope ``{"headers", "body", "raw_body"}``, PING/PONG,
replies by ``POST /sub/<request_id>``); see ``deploy/nchan/README.md``.

In a test module (pytest puts ``tests/`` on ``sys.path``: rootdir-relative "prepend" imports, no
``tests/__init__.py``), import the fixture under its function name; tests ask for ``nchan_relay``::

    from nchan_server import NchanRelay, nchan_relay_fixture  # noqa: F401  (registers `nchan_relay`)

    async def test_something(nchan_relay: NchanRelay) -> None:
        nchan_relay.url, nchan_relay.ws_url, nchan_relay.port, nchan_relay.add_user("bot", "pw")

(The same import line in tests/conftest.py would make it available to every test module.)

Outside pytest (``python -m bench`` from the repo root)::

    from tests.nchan_server import running_nchan
    with running_nchan(workdir, workers=1, nofile=65536, cpus="0") as relay:
        ...

The fixture skips the test, with the reason, when nginx, its nchan/lua modules, lua-cjson or ``htpasswd``
are not installed (Debian: nginx libnginx-mod-nchan libnginx-mod-http-lua lua-cjson apache2-utils).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = [
    "DEPLOY_DIR",
    "NchanRelay",
    "NchanStartError",
    "missing_requirements",
    "nchan_relay_fixture",
    "render_config",
    "running_nchan",
]

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy" / "nchan"
TEMPLATE = DEPLOY_DIR / "nginx.conf.template"
NGINX_MODULES = Path("/usr/lib/nginx/modules")
REQUIRED_MODULES = ("ndk_http_module.so", "ngx_http_lua_module.so", "ngx_nchan_module.so")
LUA_CJSON_GLOB = "*/lua/5.1/cjson.so"  # /usr/lib/<multiarch>/lua/5.1/cjson.so (LuaJIT is Lua 5.1)
_MODULE_PACKAGES = "libnginx-mod-nchan libnginx-mod-http-lua"

_PLACEHOLDER_RE = re.compile(r"@([A-Z_]+)@")


class NchanStartError(RuntimeError):
    """nginx did not start; the message carries the tail of its error log."""


def missing_requirements() -> str | None:
    """Why the nchan relay cannot run here, or ``None`` when everything is installed."""
    if shutil.which("nginx") is None:
        return "nginx is not installed (apt-get install nginx)"
    for name in REQUIRED_MODULES:
        if not (NGINX_MODULES / name).exists():
            return f"nginx module {name} is missing (apt-get install {_MODULE_PACKAGES})"
    if not any(Path("/usr/lib").glob(LUA_CJSON_GLOB)):
        return "lua-cjson is not installed (apt-get install lua-cjson)"
    if shutil.which("htpasswd") is None:
        return "htpasswd is not installed (apt-get install apache2-utils)"
    return None


def render_config(
    *,
    listen: str,
    htpasswd: Path,
    workers: int | str = 1,
    nofile: int = 4096,
    reply_timeout: str = "1s",
    access_log: str = "off",
    user: str | None = None,
) -> str:
    """Fill in ``deploy/nchan/nginx.conf.template``.

    Raises:
        KeyError: the template has a placeholder this function does not know.
    """
    values = {
        "LISTEN": listen,
        "HTPASSWD": str(htpasswd),
        "WORKERS": str(workers),
        "NOFILE": str(nofile),
        "REPLY_TIMEOUT": reply_timeout,
        "ACCESS_LOG": access_log,
        "LUA_DIR": str(DEPLOY_DIR),
        # Workers of a root master switch to this user; they must read the htpasswd file in a
        # private temporary directory, so stay root. (Without root nginx ignores the directive.)
        "USER": user or ("root" if os.geteuid() == 0 else "nobody"),
    }
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], TEMPLATE.read_text())


def free_port() -> int:
    """A TCP port that was free a moment ago (nginx start is retried if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NchanRelay:
    """A running nginx + nchan relay."""

    prefix: Path
    port: int
    htpasswd_path: Path
    process: subprocess.Popen[bytes]
    _users: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    def add_user(self, name: str, password: str, *, scheme: str = "-B") -> None:
        """Add or replace an htpasswd entry with the real ``htpasswd`` (``-B`` bcrypt, ``-m`` apr1,
        ``-s`` SHA). nginx reads the file on every request: no reload needed."""
        subprocess.run(
            ["htpasswd", "-b", scheme, str(self.htpasswd_path), name, password],
            check=True,
            capture_output=True,
        )
        self._users.add(name)

    def server_pids(self) -> list[int]:
        """The master and its worker processes (for CPU and RSS sampling)."""
        return [self.process.pid, *_children(self.process.pid)]

    def worker_pids(self) -> list[int]:
        return self.server_pids()[1:] or [self.process.pid]

    def status(self) -> dict[str, str]:
        """``/status`` (nchan_stub_status) as a dict: ``subscribers``, ``channels``, ..."""
        with urllib.request.urlopen(f"{self.url}/status", timeout=5) as resp:
            text = resp.read().decode()
        return dict(
            (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in text.splitlines()) if v
        )

    def wait_for_subscribers(self, count: int, timeout: float = 5.0) -> None:
        """Block until nchan counts ``count`` subscribers (a subscription is live only then).

        Raises:
            TimeoutError: not reached within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            seen = int(self.status().get("subscribers", "0"))
            if seen == count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nchan has {seen} subscribers, expected {count}")
            time.sleep(0.01)  # polling a condition with a deadline, not synchronisation by sleep


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # the 4th field after the ")" that ends the command name is the parent pid
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
    return sorted(out)


def _wait_until_accepting(proc: subprocess.Popen[bytes], port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:  # a worker answers (the master alone already accepts TCP connections)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.01)  # polling with a deadline
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # fast shutdown: open WebSockets would delay a graceful QUIT
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def running_nchan(
    workdir: Path,
    *,
    port: int = 0,
    workers: int | str = 1,
    nofile: int = 4096,
    reply_timeout: str = "1s",
    access_log: str = "off",
    cpus: str | None = None,
    start_timeout: float = 10.0,
) -> Iterator[NchanRelay]:
    """Render the config into ``workdir``, start nginx in the foreground and stop it afterwards.

    Args:
        workdir: an empty directory; it becomes nginx's prefix (config, logs, pid, temp files).
        port: 0 for a free port.
        cpus: a ``taskset -c`` CPU list to pin nginx to (benchmark), or ``None``.

    Raises:
        NchanStartError: nginx exited or did not accept connections in time.
    """
    reason = missing_requirements()
    if reason is not None:
        raise NchanStartError(reason)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    htpasswd = workdir / "htpasswd"
    htpasswd.touch()
    last_error = ""
    for _attempt in range(3):
        chosen = port or free_port()
        conf = workdir / "nginx.conf"
        conf.write_text(
            render_config(
                listen=f"127.0.0.1:{chosen}",
                htpasswd=htpasswd,
                workers=workers,
                nofile=nofile,
                reply_timeout=reply_timeout,
                access_log=access_log,
            )
        )
        error_log = workdir / "error.log"
        cmd = ["nginx", "-p", f"{workdir}/", "-c", str(conf), "-e", str(error_log)]
        if cpus is not None:
            cmd = ["taskset", "-c", cpus, *cmd]
        with open(workdir / "nginx.stderr", "ab") as stderr:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
        if _wait_until_accepting(proc, chosen, time.monotonic() + start_timeout):
            relay = NchanRelay(prefix=workdir, port=chosen, htpasswd_path=htpasswd, process=proc)
            try:
                yield relay
            finally:
                _stop(proc)
            return
        _stop(proc)
        last_error = _tail(error_log) + _tail(workdir / "nginx.stderr")
        if port or "Address already in use" not in last_error:
            break
    raise NchanStartError(f"nginx did not start:\n{last_error}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
    except OSError:
        return ""


@pytest.fixture(name="nchan_relay")
def nchan_relay_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NchanRelay]:
    """nginx + nchan with ``deploy/nchan`` on a free port; skipped if nginx/nchan is not installed."""
    from system_programs import require  # here: bench/ imports this module without the test helpers

    require("nginx+nchan")
    # A challenge waits 3 s here, not Feishu's 1 s: a loaded CI machine must not turn a slow reply
    # into a flaky 408.
    with running_nchan(tmp_path_factory.mktemp("nchan"), reply_timeout="3s") as relay:
        yield relay


def _main() -> None:  # pragma: no cover - manual use: python tests/nchan_server.py
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, running_nchan(Path(tmp)) as relay:
        print(f"nchan relay on {relay.url} (prefix {relay.prefix}); Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            relay.process.wait()


if __name__ == "__main__":
    _main()
