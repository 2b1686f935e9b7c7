"""``wslarkbot demo``: the whole chain on one machine, every hop printed as it happens.

Parts, all real and on 127.0.0.1: a relay (:class:`~wslarkbot.relay.RelayThread`, port 0), a
:class:`~wslarkbot.sim.openapi_server.FakeOpenAPI`, an echo :class:`~wslarkbot.bot.Bot` connected through
:class:`~wslarkbot.client.AsyncClient`, and a :class:`~wslarkbot.sim.feishu.FeishuSimulator`. Three steps:
the console's challenge, a text message (the bot replies with a card through the OpenAPI), and a click on
that card (the bot answers with a toast and a new card).

Hops are observed only through what the parts already expose: the client's :class:`ClientStatus`
counters (delivered to the bot, answer sent), the demo bot's own handlers, ``FakeOpenAPI.wait_for_calls``,
the simulator's results (Feishu's verdict) and the relay's ``GET /status``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO, TypeVar

import httpx

from ..bot import Bot
from ..cards import (
    CardActionResponse,
    FeishuMessageAction,
    FeishuMessageButton,
    FeishuMessageCard,
    FeishuMessageDiv,
    Toast,
)
from ..client import AsyncClient
from ..events import CardAction, MessageEvent
from ..exceptions import WslarkbotError
from ..relay import RelayConfig, RelayThread
from .app import SimApp, new_id
from .feishu import FeishuSimulator
from .openapi_server import FakeOpenAPI

__all__ = ["run_demo"]

T = TypeVar("T")
TEXT = "hello from the demo"
CLICK = {"action": "demo-click"}


class HopFailed(WslarkbotError):
    """A hop happened wrongly, or not at all; ``str(exc)`` is the line to print."""


@dataclass
class Hop:
    """One hop to watch: ``watch()`` returns the detail to print (or ``(detail, when)``, ``when`` the
    ``time.monotonic()`` at which it happened, if its watcher learns of it later), or raises
    :class:`HopFailed`.

    ``final`` marks Feishu's answer: when it fails, the hops still awaited will not come.
    """

    label: str
    watch: Callable[[], Awaitable[str | tuple[str, float]]]
    final: bool = False


def _in_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run a blocking wait in a daemon thread (never the loop's executor: a wait left behind by a failed
    step must not delay the exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(outcome: Callable[[], None]) -> None:
        try:
            loop.call_soon_threadsafe(outcome)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:
            error = exc
            deliver(lambda: None if future.done() else future.set_exception(error))
        else:
            deliver(lambda: None if future.done() else future.set_result(result))

    threading.Thread(target=run, name="wslarkbot-demo-wait", daemon=True).start()
    return future


class _Printer:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def line(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def hop(self, ms: float, label: str, detail: str, ok: bool = True) -> None:
        self.line(f"{'  ' if ok else '!!'}{ms:8.1f} ms  {label:<16} {detail}")


async def _step(printer: _Printer, title: str, first: str, hops: list[Hop], timeout: float) -> bool:
    """Start every watcher; print the hops in causal order (the order of ``hops``), each with the time it
    happened; False when one failed or did not come."""
    printer.line()
    printer.line(title)
    start = time.monotonic()
    printer.hop(0.0, "Feishu -> relay", first)
    tasks = [asyncio.ensure_future(hop.watch()) for hop in hops]
    seen: dict[int, float] = {}  # hop index -> monotonic time its watcher finished
    printed, ok, aborted = 0, True, False

    def show(n: int) -> None:  # print finished hop n (its result, or why it failed)
        nonlocal ok, aborted
        task, hop = tasks[n], hops[n]
        exc = task.exception()
        if exc is None:
            result = task.result()
            detail, when = result if isinstance(result, tuple) else (result, seen[n])
            printer.hop((when - start) * 1000, hop.label, detail)
            return
        ok = False
        detail = str(exc) if isinstance(exc, HopFailed) else repr(exc)
        printer.hop((seen[n] - start) * 1000, hop.label, detail, ok=False)
        aborted = aborted or hop.final

    pending = set(tasks)
    while pending and not aborted:
        done, pending = await asyncio.wait(
            pending, timeout=max(0.0, start + timeout - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            break
        for task in done:
            seen[tasks.index(task)] = time.monotonic()
        while printed < len(tasks) and tasks[printed].done():  # every finished hop whose causes are shown
            show(printed)
            printed += 1
    for n in range(printed, len(tasks)):  # what is left, still in causal order
        if tasks[n].done():
            show(n)
            continue
        tasks[n].cancel()
        ok = False
        why = "not seen: Feishu's answer already failed" if aborted else f"not seen within {timeout:g} s"
        printer.hop((time.monotonic() - start) * 1000, hops[n].label, why, ok=False)
    return ok


async def run_demo(
    *,
    keep_running: bool = False,
    wrong_encrypt_key: bool = False,
    hop_timeout: float = 5.0,
    out: TextIO | None = None,
) -> int:
    """Run the demo; returns the exit status (0: every hop seen). See the module docstring."""
    printer = _Printer(out or sys.stdout)
    app = SimApp.random()
    bot_key = SimApp.random().encrypt_key if wrong_encrypt_key else app.encrypt_key
    handled: asyncio.Queue[str] = asyncio.Queue()
    with FakeOpenAPI() as openapi, RelayThread(RelayConfig(host="127.0.0.1", port=0)) as relay:
        openapi.add_app(app.app_id, app.app_secret)
        bot = Bot(app.app_id, app.app_secret, app.verification_token, bot_key, host=openapi.url)
        _echo_handlers(bot, handled)
        hook_url = f"{relay.url}/hook/{app.app_id}"
        printer.line("wslarkbot demo: Feishu, relay, bot and OpenAPI on this machine (no Feishu account)")
        printer.line(f"  app           {app.app_id} (Encrypt Key on)")
        printer.line(f"  relay         {relay.url}   webhook URL {hook_url}")
        printer.line(f"  fake OpenAPI  {openapi.url}")
        wrong = " with a WRONG Encrypt Key (--wrong-encrypt-key)" if wrong_encrypt_key else ""
        try:
            async with (
                AsyncClient(bot, server=f"127.0.0.1:{relay.port}", protocol="http") as client,
                FeishuSimulator(app, event_url=hook_url, retry_intervals=(), openapi=openapi) as sim,
            ):
                status = client.status
                connected = await _in_thread(
                    lambda: status.wait_for(lambda s: s.connected and s.hellos >= 1, hop_timeout)
                )
                if not connected:
                    printer.line(f"!! the bot could not connect to the relay: {status.last_error}")
                    return 1
                printer.line(f"  bot           echo bot{wrong}, connected over {relay.ws_url(app.app_id)}")
                demo = _Demo(printer, sim, client, openapi, handled, hop_timeout)
                ok = await demo.run()
                ok = await _check_relay_status(printer, relay.url, expected=demo.sent) and ok
                if not ok and status.rejected:
                    printer.line(
                        f"   the bot rejected {status.rejected} request(s): its signature, "
                        "decryption or token check failed (wrong Encrypt Key or Verification Token)"
                    )
                printer.line()
                printer.line("demo OK: every hop seen" if ok else "demo FAILED: see the hops marked !!")
                if keep_running:
                    await _keep_running(printer, app, hook_url, handled)
                return 0 if ok else 1
        finally:
            await bot.aclose()


def _echo_handlers(bot: Bot, handled: asyncio.Queue[str]) -> None:
    """The demo bot: text -> a card reply with a button; click -> a toast and a new card."""

    @bot.on_text
    async def echo(event: MessageEvent) -> None:
        if event.sender_type == "app":
            return  # never answer a bot
        handled.put_nowait(f"handled text {event.text!r}; replying with a card")
        card = FeishuMessageCard(
            FeishuMessageDiv(f"echo: {event.text}"),
            FeishuMessageAction(FeishuMessageButton("Click me", value=CLICK, type="primary")),
            header="wslarkbot demo",
        )
        await bot.async_api.reply_card(event.message_id, card)

    @bot.on_card_action
    async def clicked(event: CardAction) -> CardActionResponse:
        handled.put_nowait(f"handled card click, value {json.dumps(event.value)}; answering a toast")
        new_card = FeishuMessageCard(FeishuMessageDiv("You clicked."), header="wslarkbot demo")
        return CardActionResponse(toast=Toast("Clicked!", "success"), card=new_card)


class _Demo:
    """The three steps; each builds its hops, with counters read before sending."""

    def __init__(
        self,
        printer: _Printer,
        sim: FeishuSimulator,
        client: AsyncClient,
        openapi: FakeOpenAPI,
        handled: asyncio.Queue[str],
        timeout: float,
    ) -> None:
        self.printer, self.sim, self.client, self.openapi = printer, sim, client, openapi
        self.handled, self.timeout = handled, timeout
        self.sent = 0
        self.message_id = ""

    async def run(self) -> bool:
        for step in (self.challenge, self.text, self.click):
            while not self.handled.empty():
                self.handled.get_nowait()
            self.sent += 1
            if not await step():
                self.printer.line("   stopping here: the next steps need this one")
                return False
        return True

    def _counter(self, name: str, what: str) -> Hop:
        status, before = self.client.status, getattr(self.client.status, name)

        async def watch() -> tuple[str, float]:
            def wait() -> bool:
                return status.wait_for(lambda s: getattr(s, name) > before, self.timeout)

            seen = await _in_thread(wait)
            if not seen:
                raise HopFailed(f"not seen within {self.timeout:g} s")
            return what, status.changed_at.get(name, time.monotonic())

        label = "relay -> bot" if name == "received" else "bot -> relay"
        return Hop(label, watch)

    def _handler(self) -> Hop:
        async def watch() -> str:
            return await self.handled.get()

        return Hop("bot handler", watch)

    def _openapi(self, path: str, what: str) -> Hop:
        async def watch() -> str:
            try:
                calls = await _in_thread(lambda: self.openapi.wait_for_calls(path, 1, self.timeout))
            except TimeoutError:
                raise HopFailed(f"no call to {path} within {self.timeout:g} s") from None
            call = calls[0]
            line = f"{call.method} {call.path} -> HTTP {call.status}{what}"
            if call.status != 200:
                raise HopFailed(f"{line} (code {call.code})")
            return line

        return Hop("bot -> OpenAPI", watch)

    async def challenge(self) -> bool:
        async def answer() -> str:
            result = await self.sim.url_verification()
            if not result.ok:
                got = f"HTTP {result.status}" if result.status else "no answer within 1 s"
                raise HopFailed(f"{got}: {result.error} (needs the challenge back within 1 s)")
            return f"HTTP 200 in {result.elapsed * 1000:.1f} ms, challenge echoed: the console saves the URL"

        return await _step(
            self.printer,
            "1/3  url_verification: saving the request URL in the console",
            "POST /hook/<app_id>  url_verification (encrypted, no signature)",
            [
                self._counter("received", "delivered over the WebSocket"),
                self._counter("replies", "challenge answered on the WebSocket"),
                Hop("relay -> Feishu", answer, final=True),
            ],
            self.timeout,
        )

    async def text(self) -> bool:
        message_id = self.message_id = new_id("om_")

        async def answer() -> str:
            result = await self.sim.send_text_message(TEXT, message_id=message_id)
            attempt = result.attempts[-1]
            if not result.delivered:
                got = f"HTTP {attempt.status}" if attempt.status else f"no answer ({attempt.error})"
                raise HopFailed(f"{got}: not delivered (Feishu would retry in 15 s)")
            return f"HTTP 200 in {(attempt.elapsed or 0) * 1000:.1f} ms: delivered, Feishu will not retry"

        # In causal order: the handler fetches a token (once), replies, returns; then the client acks.
        hops = [self._counter("received", "delivered over the WebSocket"), self._handler()]
        if not self.openapi.calls_to("tenant_access_token"):
            hops.append(self._openapi("/auth/v3/tenant_access_token/internal", " (token, cached 2 h)"))
        hops += [
            self._openapi(f"/im/v1/messages/{message_id}/reply", " (the card reply)"),
            self._counter("acks", "acked on the WebSocket (event handled)"),
            Hop("relay -> Feishu", answer, final=True),
        ]
        return await _step(
            self.printer,
            f"2/3  text message {TEXT!r}: the bot replies with a card",
            "POST /hook/<app_id>  im.message.receive_v1 (encrypted, signed)",
            hops,
            self.timeout,
        )

    async def click(self) -> bool:
        replies = [m for m in self.openapi.messages.values() if m.parent_id == self.message_id]
        on_card = {"open_message_id": replies[0].message_id} if replies else {}

        async def answer() -> str:
            result = await self.sim.send_card_action(CLICK, **on_card)
            if not result.ok:
                got = f"HTTP {result.status}" if result.status else "no answer within 3 s"
                raise HopFailed(f"{got}: error {result.error_code} {result.error}")
            toast = (result.response or {}).get("toast", {}).get("content")
            ms = result.elapsed * 1000
            return f"HTTP 200 in {ms:.1f} ms: the user sees toast {toast!r} and the new card"

        return await _step(
            self.printer,
            "3/3  card click on the bot's card: the bot answers a toast",
            "POST /hook/<app_id>  card.action.trigger (encrypted, signed)",
            [
                self._counter("received", "delivered over the WebSocket"),
                self._handler(),
                self._counter("replies", "callback answer sent on the WebSocket"),
                Hop("relay -> Feishu", answer, final=True),
            ],
            self.timeout,
        )


async def _check_relay_status(printer: _Printer, relay_url: str, *, expected: int) -> bool:
    """The relay's own counters must agree: every request published and delivered, none timed out."""
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        stats = (await http.get(f"{relay_url}/status")).json()
    keys = ("published", "delivered", "replies", "acks", "timeouts", "undelivered", "rejected")
    printer.line()
    printer.line("relay /status: " + ", ".join(f"{k} {stats.get(k)}" for k in keys))
    ok = (
        stats.get("published") == expected
        and stats.get("delivered") == expected
        and not stats.get("timeouts")
    )
    if not ok:
        printer.line(f"!! expected {expected} published, {expected} delivered and no timeouts")
    return ok


async def _keep_running(printer: _Printer, app: SimApp, hook_url: str, handled: asyncio.Queue[str]) -> None:
    """Serve until SIGINT/SIGTERM, printing what the bot handles."""
    printer.line()
    printer.line("Still running; Ctrl-C stops. Send your own requests:")
    printer.line(f"  wslarkbot simulate --url {hook_url} --encrypt-key {app.encrypt_key} \\")
    printer.line(f"      --verification-token {app.verification_token} --kind text --text 'hi'")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows, or not the main thread
            pass
    stopping = asyncio.ensure_future(stop.wait())
    while not stop.is_set():
        getting = asyncio.ensure_future(handled.get())
        done, _ = await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if getting in done:
            printer.line(f"  bot handler: {getting.result()}")
        else:
            getting.cancel()
    printer.line("stopped")
