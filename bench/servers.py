"""The two servers under test, started one after the other, each pinned to its CPU."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.nchan_server import free_port, running_nchan

from .procstat import pids_of


@dataclass
class Server:
    """A running server: where it listens and which processes to measure."""

    name: str
    url: str
    pids: Callable[[], list[int]]

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :]


def taskset(cpus: str | None, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus is not None else cmd


@contextlib.contextmanager
def nchan(workdir: Path, *, cpus: str | None, nofile: int) -> Iterator[Server]:
    """nginx + nchan with deploy/nchan, one worker (the config the tests cover)."""
    with running_nchan(workdir, workers=1, nofile=nofile, cpus=cpus) as relay:
        yield Server("nchan", relay.url, relay.server_pids)


#: nchan runs with access_log off; the relay's per-webhook INFO line is its access log.
DEFAULT_RELAY_ARGS = ["--log-level", "WARNING"]


@contextlib.contextmanager
def wslarkbot(workdir: Path, *, cpus: str | None, extra_args: list[str]) -> Iterator[Server]:
    """``wslarkbot serve --port <free port>`` as a subprocess, ready once ``/healthz`` answers."""
    log_path = workdir / "wslarkbot.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "wslarkbot", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += extra_args or DEFAULT_RELAY_ARGS
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(taskset(cpus, cmd), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"wslarkbot serve did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.05)  # polling /healthz with a deadline
        yield Server("wslarkbot", url, pids_of(proc.pid))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def relay_available() -> str | None:
    """Why our relay cannot run (``None`` if it can)."""
    relay_dir = Path(__file__).resolve().parents[1] / "src" / "wslarkbot" / "relay"
    if not (relay_dir / "app.py").exists():
        return "src/wslarkbot/relay is not written yet"
    probe = subprocess.run(
        [sys.executable, "-m", "wslarkbot", "serve", "--help"], capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        return f"`wslarkbot serve --help` failed: {probe.stderr.strip()[-300:]}"
    return None
