"""``wslarkbot run``: what it requires is what its help says (issue 18)."""

from __future__ import annotations

import os
import subprocess
import sys


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WSLARKBOT_")}
    return subprocess.run(
        [sys.executable, "-m", "wslarkbot", "run", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_run_names_every_missing_setting_and_its_variable() -> None:
    out = _run()
    assert out.returncode == 2
    for flag, env in [
        ("--app-id", "WSLARKBOT_APP_ID"),
        ("--app-secret", "WSLARKBOT_APP_SECRET"),
        ("--server", "WSLARKBOT_SERVER"),
        ("--verification-token", "WSLARKBOT_VERIFICATION_TOKEN"),
    ]:
        assert f"{flag} (${env})" in out.stderr


def test_run_needs_no_verification_token_when_an_encrypt_key_authenticates_requests() -> None:
    out = _run("--encrypt-key", "k")
    assert out.returncode == 2 and "--verification-token" not in out.stderr
    help_text = _run("--help").stdout
    assert "required unless --encrypt-key is set" in " ".join(help_text.split())
