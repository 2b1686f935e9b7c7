"""The production kit under deploy/ (issue 21): the image's install steps, the systemd unit, the compose file.

There is no Docker engine on these machines: the image's steps are ``deploy/install.sh``, run here into a
fresh directory; the installed relay then starts from a config file, answers ``/healthz`` and exits 0 on
SIGTERM. The unit is checked with ``systemd-analyze verify`` (Debian's systemd package).
"""

from __future__ import annotations

import os
import pathlib
import re
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from system_programs import require

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
LISTENING = re.compile(r"wslarkbot relay listening on http://[^:]+:(\d+)")

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    """``deploy/install.sh`` run into a fresh directory, from this checkout (what the Dockerfile does)."""
    prefix = tmp_path_factory.mktemp("image") / "opt-wslarkbot"
    env = {**os.environ, "PYTHON": sys.executable, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(
        ["sh", str(DEPLOY / "install.sh"), str(prefix), str(ROOT)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    yield prefix


def _wait_for_port(proc: subprocess.Popen[str], timeout: float) -> int:
    assert proc.stderr is not None
    seen = []
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not selector.select(max(0.0, deadline - time.monotonic())):
                break
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            found = LISTENING.search(line)
            if found:
                return int(found.group(1))
    raise AssertionError("the installed relay did not start:\n" + "".join(seen))


def test_the_install_script_gives_a_relay_that_starts_from_a_config_file_and_drains_on_sigterm(
    installed: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    assert (installed / "relay.example.toml").read_text() == (DEPLOY / "relay.example.toml").read_text()
    config = tmp_path / "relay.toml"
    config.write_text('host = "127.0.0.1"\nport = 0\nlog_json = true\n', encoding="utf-8")
    proc = subprocess.Popen(
        [str(installed / "bin" / "wslarkbot"), "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = _wait_for_port(proc, 30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200 and answer.read() == b"ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def test_the_systemd_unit_passes_systemd_analyze_verify(
    installed: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    require("systemd-analyze")
    unit = (DEPLOY / "wslarkbot.service").read_text(encoding="utf-8")
    hardened = ["DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "LimitNOFILE=65536"]
    lifecycle = ["Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM"]
    for setting in hardened + lifecycle:
        assert setting in unit.splitlines(), setting
    # verify checks that ExecStart exists: point it at the relay the install script just made
    local = tmp_path / "wslarkbot.service"
    local.write_text(unit.replace("/opt/wslarkbot", str(installed)), encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert done.returncode == 0 and "wslarkbot.service" not in done.stderr, done.stderr


def test_the_image_and_compose_file_use_the_install_script_healthz_and_a_non_root_user() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert "sh /src/deploy/install.sh /opt/wslarkbot /src" in dockerfile
    assert re.search(r"^USER wslarkbot$", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert re.search(r'^ENTRYPOINT \["/opt/wslarkbot/bin/wslarkbot", "serve"\]$', dockerfile, re.M), (
        "exec form"
    )
    compose = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    for service in ("redis:", "relay-a:", "relay-b:", "nginx:"):
        assert f"\n  {service}" in compose, service
    assert "nginx-lb.conf" in compose and (DEPLOY / "nginx-lb.conf").is_file()
