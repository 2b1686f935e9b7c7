"""``wslarkbot simulate`` and ``wslarkbot demo`` against real relays, clients and webhooks on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from wslarkbot.bot import Bot
from wslarkbot.cli import main
from wslarkbot.client import AsyncClient
from wslarkbot.relay.runner import RunningRelay, run_relay
from wslarkbot.relay.testing import test_config as relay_test_config
from wslarkbot.sim.app import SimApp
from wslarkbot.sim.simulate import describe_intervals, explain
from wslarkbot.webhook import create_webhook_app

WAIT = 5.0
ENV_NAMES = ("WSLARKBOT_APP_ID", "WSLARKBOT_ENCRYPT_KEY", "WSLARKBOT_VERIFICATION_TOKEN")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def args_for(app: SimApp, url: str, *extra: str) -> list[str]:
    argv = ["simulate", "--url", url, "--app-id", app.app_id, "--verification-token", app.verification_token]
    if app.encrypt_key:
        argv += ["--encrypt-key", app.encrypt_key]
    return argv + list(extra)


async def run_cli(argv: list[str]) -> int:
    """``wslarkbot ...`` in a worker thread (it runs its own event loop), sharing our stdout capture."""
    return await asyncio.to_thread(main, argv)


@asynccontextmanager
async def connected_bot(relay: RunningRelay, bot: Bot) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(bot, server=f"127.0.0.1:{relay.port}") as client:
        ok = await asyncio.to_thread(client.status.wait_for, lambda s: s.connected and s.hellos >= 1, WAIT)
        assert ok, f"client not connected: {client.status!r}"
        yield client
    await bot.aclose()


@asynccontextmanager
async def webhook_server(bot: Bot, path: str = "/webhook/{app_id}") -> AsyncIterator[str]:
    """The bot's own webhook (no relay) on 127.0.0.1:0; yields its base URL."""
    runner = web.AppRunner(create_webhook_app(bot, path=path), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
        await bot.aclose()


def make_bot(app: SimApp, **changes: Any) -> Bot:
    values = {"encrypt_key": app.encrypt_key, "verification_token": app.verification_token, **changes}
    return Bot(app.app_id, app.app_secret, values["verification_token"], values["encrypt_key"])


# -- simulate ---------------------------------------------------------------------------------------


async def test_simulate_text_through_relay_reaches_the_bot_and_reports_delivered(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = SimApp.random()
    bot = make_bot(app)
    texts: list[str | None] = []
    bot.on_text(lambda event: texts.append(event.text))
    async with run_relay(relay_test_config(ack_timeout=2.0)) as relay, connected_bot(relay, bot):
        rc = await run_cli(args_for(app, f"{relay.url}/hook/{app.app_id}", "--text", "hi from the test"))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "<- HTTP 200 in" in out and "OK: delivered" in out
    assert "encrypted, signed" in out
    assert texts == ["hi from the test"]


async def test_simulate_against_a_bot_with_the_wrong_key_fails_and_says_what_to_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = SimApp.random()
    wrong = make_bot(app, encrypt_key=SimApp.random().encrypt_key)
    async with run_relay(relay_test_config(ack_timeout=0.5)) as relay, connected_bot(relay, wrong) as client:
        rc = await run_cli(args_for(app, f"{relay.url}/hook/{app.app_id}"))
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "<- HTTP 500" in out and "FAILED: not delivered" in out
    assert "wrong Encrypt Key or Verification Token" in out
    assert "send the same event 4 more times, waiting 15 s, 5 min, 1 h and 6 h" in out
    assert client.status.rejected == 1


async def test_simulate_with_no_bot_connected_explains_the_relays_503(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = SimApp.random()
    async with run_relay(relay_test_config()) as relay:
        rc = await run_cli(args_for(app, f"{relay.url}/hook/{app.app_id}", "--kind", "card"))
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "<- HTTP 503" in out and "error 200671" in out
    assert "no bot connected for this channel" in out
    assert "retries:" not in out, "callbacks are never retried"


@pytest.mark.parametrize("kind", ["challenge", "card", "legacy-card"])
async def test_simulate_each_kind_against_a_direct_webhook_succeeds(
    kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app = SimApp.random()
    bot = make_bot(app)
    bot.on_card_action(lambda event: {"toast": {"type": "success", "content": "ok"}})
    async with webhook_server(bot) as base:
        rc = await run_cli(args_for(app, f"{base}/webhook/{app.app_id}", "--kind", kind))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "<- HTTP 200" in out and "\nOK: " in out


async def test_simulate_wrong_token_on_a_direct_webhook_is_a_401_with_a_hint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = SimApp.random(encrypt=False)
    async with webhook_server(make_bot(app, verification_token="not-the-token")) as base:
        rc = await run_cli(args_for(app, f"{base}/webhook/{app.app_id}", "--kind", "challenge"))
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "<- HTTP 401" in out and "console would refuse to save this URL" in out
    assert "--verification-token" in out


async def test_simulate_takes_credentials_from_the_environment_and_the_app_id_from_the_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    app = SimApp.random()
    monkeypatch.setenv("WSLARKBOT_ENCRYPT_KEY", app.encrypt_key or "")
    monkeypatch.setenv("WSLARKBOT_VERIFICATION_TOKEN", app.verification_token)
    async with webhook_server(make_bot(app), path="/hook/{app_id}") as base:
        rc = await run_cli(["simulate", "--url", f"{base}/hook/{app.app_id}", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert report["ok"] is True and report["kind"] == "text"
    assert [a["status"] for a in report["attempts"]] == [200]


def test_simulate_usage_errors_exit_2_without_sending(capsys: pytest.CaptureFixture[str]) -> None:
    url = "http://127.0.0.1:9/hook/cli_x"  # the discard port: nothing must be sent anyway
    assert main(["simulate", "--url", url]) == 2
    assert "--verification-token" in capsys.readouterr().err
    assert main(["simulate", "--url", "http://127.0.0.1:9/hook/", "--verification-token", "t"]) == 2
    assert "--app-id" in capsys.readouterr().err
    assert main(["simulate", "--url", url, "--verification-token", "t", "--value", "[1]"]) == 2
    assert "JSON object" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("status", "body", "error", "expected"),
    [
        (503, '{"msg":"no subscriber connected for channel cli_x"}', None, "no bot connected"),
        (500, '{"msg":"the bot did not handle this request"}', None, "wrong Encrypt Key"),
        (504, '{"msg":"no reply from the bot within 2.8 s"}', None, "its handler is slow"),
        (401, '{"msg":"request rejected"}', None, "--encrypt-key and --verification-token"),
        (None, "", "timeout", "nothing answered in time"),
        (None, "", "ConnectError: refused", "could not connect"),
        (302, "", None, "does not follow redirects"),
        (200, "{}", None, None),
    ],
)
def test_explain_maps_answers_to_what_to_check(
    status: int | None, body: str, error: str | None, expected: str | None
) -> None:
    hint = explain(status, body, error)
    assert hint == expected if expected is None else expected in (hint or "")


def test_retry_schedule_is_described_in_feishu_units() -> None:
    assert describe_intervals((15, 300, 3600, 21600)) == "15 s, 5 min, 1 h and 6 h"
    assert describe_intervals((21600,)) == "6 h"


# -- demo -------------------------------------------------------------------------------------------


def run_demo_process(*extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSLARKBOT_")}
    return subprocess.run(
        [sys.executable, "-m", "wslarkbot", "demo", *extra],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
        check=False,
    )


def step_lines(out: str, title_start: str) -> list[str]:
    """The hop lines of one step (from its title to the next blank line)."""
    block = out.split("\n" + title_start, 1)[1].split("\n\n", 1)[0]
    return block.splitlines()[1:]


HOP_LABELS = (
    "Feishu -> relay",
    "relay -> bot",
    "bot handler",
    "bot -> OpenAPI",
    "bot -> relay",
    "relay -> Feishu",
)


def labels(lines: list[str]) -> list[str]:
    """The hops the lines show, in the order printed (causal order), repeats of one hop folded."""
    out: list[str] = []
    for line in lines:
        label = next((lb for lb in HOP_LABELS if f" ms  {lb}" in line), None)
        if label is not None and (not out or out[-1] != label):
            out.append(label)
    return out


def test_demo_exits_0_and_prints_every_hop_of_each_step_in_causal_order() -> None:
    proc = run_demo_process()
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "!!" not in out
    assert labels(step_lines(out, "1/3")) == [
        "Feishu -> relay",
        "relay -> bot",
        "bot -> relay",
        "relay -> Feishu",
    ]
    assert labels(step_lines(out, "2/3")) == [  # the token (once) and the reply, before the ack
        "Feishu -> relay",
        "relay -> bot",
        "bot handler",
        "bot -> OpenAPI",
        "bot -> relay",
        "relay -> Feishu",
    ]
    assert labels(step_lines(out, "3/3")) == [
        "Feishu -> relay",
        "relay -> bot",
        "bot handler",
        "bot -> relay",
        "relay -> Feishu",
    ]
    assert "/reply -> HTTP 200" in out and "toast 'Clicked!'" in out
    assert "relay /status: published 3, delivered 3" in out and "timeouts 0" in out
    assert out.rstrip().endswith("demo OK: every hop seen")


def test_demo_with_a_misconfigured_bot_exits_1_and_marks_the_failed_hop() -> None:
    proc = run_demo_process("--wrong-encrypt-key")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    failed = [line for line in step_lines(out, "1/3") if line.startswith("!!")]
    assert any("relay -> Feishu" in line for line in failed)
    assert "the bot rejected 1 request(s)" in out
    assert "demo FAILED" in out and "2/3" not in out


def test_demo_keep_running_serves_simulate_until_interrupted(capsys: pytest.CaptureFixture[str]) -> None:
    """The README quick start: `wslarkbot demo --keep-running`, then the `simulate` line it prints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSLARKBOT_")}
    with subprocess.Popen(
        [sys.executable, "-m", "wslarkbot", "demo", "--keep-running"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            lines: list[str] = []
            while not lines or not lines[-1].startswith("Still running"):
                line = proc.stdout.readline()
                assert line, "demo ended early:\n" + "".join(lines)
                lines.append(line)
            command = (proc.stdout.readline() + proc.stdout.readline()).replace("\\\n", " ")
            argv = shlex.split(command)[1:]  # drop "wslarkbot"
            assert main([*argv[:-1], "from simulate"]) == 0
            assert "OK: delivered" in capsys.readouterr().out
            handled = proc.stdout.readline().strip()
            assert handled == "bot handler: handled text 'from simulate'; replying with a card"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=WAIT) == 0
            assert proc.stdout.read().strip() == "stopped"
        finally:
            if proc.poll() is None:
                proc.kill()


def test_cli_without_aiohttp_lists_simulate_and_demo_and_demo_asks_for_the_extra() -> None:
    """`wslarkbot --help` needs only the SDK; `wslarkbot demo` says which extra it needs."""
    block = "import sys; sys.modules['aiohttp'] = None; from wslarkbot.cli import main; "
    helped = subprocess.run(
        [sys.executable, "-c", block + "main(['--help'])"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert helped.returncode == 0, helped.stderr
    assert "simulate" in helped.stdout and "demo" in helped.stdout
    demo = subprocess.run(
        [sys.executable, "-c", block + "sys.exit(main(['demo']))"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert demo.returncode == 2 and "pip install 'wslarkbot[relay]'" in demo.stderr
