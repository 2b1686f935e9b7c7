"""An LLM chat bot for Feishu/Lark: answers stream into a message card, behind a wslarkbot relay.

Any OpenAI-compatible endpoint works (OpenAI, Azure OpenAI's v1 API, DeepSeek, Qwen/DashScope, vLLM,
Ollama...). Everything is configured by flags or environment variables, never prompts::

    export WSLARKBOT_APP_ID=cli_xxx WSLARKBOT_APP_SECRET=... WSLARKBOT_VERIFICATION_TOKEN=...
    export WSLARKBOT_ENCRYPT_KEY=...            # if encryption is on in the console
    export WSLARKBOT_SERVER=relay.example.com   # the relay; Feishu's request URL is https://<relay>/hook/<app_id>
    export OPENAI_BASE_URL=https://api.openai.com/v1 OPENAI_API_KEY=sk-... OPENAI_MODEL=gpt-4o-mini
    python examples/openai_bot.py               # --help lists every option

What it does:

* a text message -> a "thinking..." card in reply, the answer streamed into it (at most 4 updates a
  second, :class:`wslarkbot.streaming.AsyncStreamingCard`), then the final card; an LLM error or timeout
  is shown in the card;
* in group chats it answers only when @mentioned (set ``--bot-open-id`` or ``--bot-name`` if the app may
  read all group messages; see :mod:`wslarkbot.content`);
* a conversation per user (app id + open_id), bounded by turns and characters;
  ``/help``, ``/system <role>`` (new role, new conversation), ``/clear``;
* handlers are ``async``: several users stream at once; one user's messages are answered in order
  (``ordering`` keyed by chat and sender), re-pushed events are ignored (``dedup``), messages older than
  ``--drop-older-than`` are skipped.

Import :func:`build_bot` to embed it (the tests do), or run this file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from openai import APIStatusError, APITimeoutError, AsyncOpenAI

from wslarkbot.bot import Bot, openapi_host
from wslarkbot.events import FeishuEvent, MessageEvent
from wslarkbot.streaming import AsyncStreamingCard, default_card, default_card_v2

__all__ = ["HELP", "Conversations", "Settings", "build_bot", "main", "make_llm", "parse_settings", "run"]

logger = logging.getLogger("openai_bot")

HELP = """**Commands**
- `/help`: this card
- `/system <role>`: set the assistant's role and start a new conversation
- `/clear`: forget the conversation

Anything else is sent to the model, with your previous messages as context. In group chats, @mention me."""


# -- settings ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Everything the bot needs. Secrets are kept out of ``repr``."""

    app_id: str
    app_secret: str = field(repr=False)
    verification_token: str = field(repr=False)
    encrypt_key: str | None = field(default=None, repr=False)
    feishu_host: str | None = None  # Bot: $WSLARKBOT_FEISHU_HOST, else open.feishu.cn
    openai_base_url: str | None = None
    openai_api_key: str = field(default="", repr=False)
    model: str = "gpt-4o-mini"
    system_role: str = "You are a helpful assistant."
    temperature: float = 0.7
    llm_timeout: float = 120.0
    llm_max_retries: int = 2
    max_turns: int = 10
    max_chars: int = 12_000
    drop_older_than: float | None = 1800.0
    bot_open_id: str | None = None
    bot_name: str | None = None
    title: str | None = None
    server: str = ""
    protocol: str | None = None
    org_name: str = ""
    org_passwd: str = field(default="", repr=False)
    log_level: str = "INFO"


#: (flag, environment variable, Settings field, type, help)
_OPTIONS: tuple[tuple[str, str, str, type, str], ...] = (
    ("--app-id", "WSLARKBOT_APP_ID", "app_id", str, "the app's App ID (cli_...); required"),
    ("--app-secret", "WSLARKBOT_APP_SECRET", "app_secret", str, "the App Secret; required"),
    ("--verification-token", "WSLARKBOT_VERIFICATION_TOKEN", "verification_token", str, "required"),
    ("--encrypt-key", "WSLARKBOT_ENCRYPT_KEY", "encrypt_key", str, "if encryption is on"),
    (
        "--feishu-host",
        "WSLARKBOT_FEISHU_HOST",
        "feishu_host",
        str,
        "open.feishu.cn (default), open.larksuite.com (Lark) or a URL",
    ),
    ("--openai-base-url", "OPENAI_BASE_URL", "openai_base_url", str, "OpenAI-compatible API base URL"),
    ("--openai-api-key", "OPENAI_API_KEY", "openai_api_key", str, "API key; required"),
    ("--model", "OPENAI_MODEL", "model", str, "model name"),
    ("--system-role", "WSLARKBOT_SYSTEM_ROLE", "system_role", str, "default system prompt"),
    ("--temperature", "OPENAI_TEMPERATURE", "temperature", float, "sampling temperature"),
    ("--llm-timeout", "OPENAI_TIMEOUT", "llm_timeout", float, "seconds for a whole answer"),
    ("--llm-max-retries", "OPENAI_MAX_RETRIES", "llm_max_retries", int, "SDK retries before streaming"),
    ("--max-turns", "WSLARKBOT_MAX_TURNS", "max_turns", int, "exchanges kept per user"),
    ("--max-chars", "WSLARKBOT_MAX_CHARS", "max_chars", int, "characters of history kept per user"),
    (
        "--drop-older-than",
        "WSLARKBOT_DROP_OLDER_THAN",
        "drop_older_than",
        float,
        "skip messages older than this many seconds (0: never)",
    ),
    ("--bot-open-id", "WSLARKBOT_BOT_OPEN_ID", "bot_open_id", str, "the bot's open_id, for @mentions"),
    ("--bot-name", "WSLARKBOT_BOT_NAME", "bot_name", str, "the bot's name, for @mentions"),
    ("--title", "WSLARKBOT_CARD_TITLE", "title", str, "a header for answer cards"),
    ("--server", "WSLARKBOT_SERVER", "server", str, "the relay, host[:port]; required"),
    ("--protocol", "WSLARKBOT_PROTOCOL", "protocol", str, "https (wss) or http (ws)"),
    ("--org-name", "WSLARKBOT_ORG_NAME", "org_name", str, "organisation channel (org mode)"),
    ("--org-passwd", "WSLARKBOT_ORG_PASSWD", "org_passwd", str, "organisation password"),
)
_REQUIRED = ("app_id", "app_secret", "verification_token", "openai_api_key", "server")


def parse_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags, then environment variables, then defaults (``--help`` lists them).

    Raises:
        SystemExit: ``--help``, a bad value or a missing required setting (status 2, from argparse).
    """
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        description="A Feishu/Lark chat bot streaming an OpenAI-compatible model's answers into cards.",
        epilog="Each flag can also be set by its environment variable (shown in brackets).",
    )
    for flag, var, name, kind, help_text in _OPTIONS:
        parser.add_argument(flag, dest=name, type=kind, default=None, help=f"{help_text} [${var}]")
    parser.add_argument("--log-level", default=env.get("WSLARKBOT_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for _flag, var, name, kind, _help in _OPTIONS:
        value = getattr(args, name)
        if value is None and env.get(var):
            try:
                value = kind(env[var])
            except ValueError:
                parser.error(f"${var}: not a valid {kind.__name__}")
        if value is not None:
            values[name] = value
    missing = [name for name in _REQUIRED if not values.get(name)]
    if missing:
        parser.error("missing " + ", ".join(f"--{n.replace('_', '-')}" for n in missing))
    if "feishu_host" in values:
        values["feishu_host"] = openapi_host(values["feishu_host"])
    if values.get("drop_older_than") == 0:
        values["drop_older_than"] = None
    return Settings(**values, log_level=args.log_level.upper())


# -- conversations ----------------------------------------------------------------------------------------


class Conversations:
    """Per-user chat history and system role, bounded: ``max_turns`` exchanges and ``max_chars``
    characters per user (oldest exchanges dropped first). Keys are ``(app_id, open_id)``. Thread-safe."""

    def __init__(self, default_role: str, *, max_turns: int = 10, max_chars: int = 12_000) -> None:
        self.default_role = default_role
        self.max_turns = max_turns
        self.max_chars = max_chars
        self._turns: dict[Hashable, deque[tuple[str, str]]] = {}
        self._roles: dict[Hashable, str] = {}
        self._lock = threading.Lock()

    def messages(self, key: Hashable, question: str) -> list[dict[str, str]]:
        """The request's messages: the system role, the kept exchanges, then ``question``."""
        with self._lock:
            history = list(self._turns.get(key, ()))
            role = self._roles.get(key, self.default_role)
        messages = [{"role": "system", "content": role}]
        for user, assistant in history:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        messages.append({"role": "user", "content": question})
        return messages

    def add(self, key: Hashable, question: str, answer: str) -> None:
        """Remember one exchange, then drop the oldest ones beyond the bounds."""
        with self._lock:
            turns = self._turns.setdefault(key, deque())
            turns.append((question, answer))
            while len(turns) > self.max_turns or (
                len(turns) > 1 and sum(len(q) + len(a) for q, a in turns) > self.max_chars
            ):
                turns.popleft()

    def clear(self, key: Hashable) -> None:
        with self._lock:
            self._turns.pop(key, None)

    def set_role(self, key: Hashable, role: str) -> None:
        """A new system role for this user, and a new conversation."""
        with self._lock:
            self._roles[key] = role
            self._turns.pop(key, None)


# -- the bot ----------------------------------------------------------------------------------------------


def _per_user_in_chat(event: FeishuEvent) -> Hashable | None:
    """Ordering key: one user's messages in one chat are answered in order; users run in parallel."""
    if isinstance(event, MessageEvent):
        return (event.chat_id, event.sender_open_id)
    return None


def _describe(exc: BaseException) -> str:
    """A short, user-facing description of an LLM failure (no stack, no request details)."""
    if isinstance(exc, (APITimeoutError, asyncio.TimeoutError)):
        return "The model did not answer in time. Please try again."
    if isinstance(exc, APIStatusError):
        return f"The model returned an error (HTTP {exc.status_code}). Please try again later."
    return f"The model could not be reached ({type(exc).__name__})."


def make_llm(settings: Settings) -> AsyncOpenAI:
    """The OpenAI SDK client for the settings (close it with ``await llm.close()``)."""
    return AsyncOpenAI(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        timeout=settings.llm_timeout,
        max_retries=settings.llm_max_retries,
    )


def build_bot(
    settings: Settings, *, llm: AsyncOpenAI | None = None, conversations: Conversations | None = None
) -> Bot:
    """The chat bot (a :class:`~wslarkbot.bot.Bot`); connect it with ``AsyncClient``/``Client`` or serve it
    with ``create_webhook_app``.

    Args:
        settings: see :class:`Settings`.
        llm: an ``AsyncOpenAI`` client (default: one from the settings).
        conversations: the history store (default: a new :class:`Conversations`).
    """
    bot = Bot(
        settings.app_id,
        settings.app_secret,
        settings.verification_token,
        settings.encrypt_key,
        host=settings.feishu_host,
        ordering=_per_user_in_chat,
        dedup=True,
        drop_older_than=settings.drop_older_than,
    )
    llm = llm or make_llm(settings)
    history = conversations or Conversations(
        settings.system_role, max_turns=settings.max_turns, max_chars=settings.max_chars
    )

    def render(text: str, state: Any) -> dict[str, Any]:  # JSON 2.0: streamed through CardKit
        return default_card_v2(text, state, title=settings.title)

    async def note(event: MessageEvent, text: str) -> None:
        await bot.async_api.reply_card(event.message_id, default_card(text, "done", title=settings.title))

    async def answer(event: MessageEvent, key: Hashable, question: str) -> None:
        card = await AsyncStreamingCard.reply(bot.async_api, event.message_id, render=render)

        async def stream() -> None:
            messages: Any = history.messages(key, question)
            chunks = await llm.chat.completions.create(
                model=settings.model,
                messages=messages,
                temperature=settings.temperature,
                stream=True,
            )
            async for chunk in chunks:
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta:
                    card.append(delta)

        try:
            await asyncio.wait_for(stream(), settings.llm_timeout)
        except Exception as exc:
            logger.warning("LLM request for %s failed: %s", event.message_id, type(exc).__name__)
            await card.fail(_describe(exc))
            return
        await card.finish()
        history.add(key, question, card.text)

    @bot.on_text
    async def on_text(event: MessageEvent) -> None:
        if event.sender_type != "user" or not event.sender_open_id:
            return  # never answer other bots (loops)
        if event.is_group and not event.mentions_bot(settings.bot_open_id, bot_name=settings.bot_name):
            return
        text = event.text_without_mentions or ""
        key = (settings.app_id, event.sender_open_id)
        command, _, rest = text.partition(" ")
        if command == "/help":
            await note(event, HELP)
        elif command == "/clear":
            history.clear(key)
            await note(event, "Conversation cleared.")
        elif command == "/system":
            if not rest.strip():
                await note(event, "Usage: `/system <role>`")
                return
            history.set_role(key, rest.strip())
            await note(event, f"New role set; new conversation started.\n\n> {rest.strip()}")
        elif text:
            await answer(event, key, text)

    return bot


# -- running ----------------------------------------------------------------------------------------------


async def run(settings: Settings) -> None:
    """Connect the bot to the relay and serve until SIGINT/SIGTERM."""
    from wslarkbot.client import AsyncClient

    llm = make_llm(settings)
    bot = build_bot(settings, llm=llm)
    client = AsyncClient(
        bot,
        server=settings.server,
        protocol=settings.protocol,
        org_name=settings.org_name,
        org_passwd=settings.org_passwd,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, client.request_stop)
        except NotImplementedError:  # Windows
            pass
    for app_id, url in client.hook_urls().items():
        logger.info("Feishu request URL for %s: %s", app_id, url)
    try:
        await client.run()
    finally:
        await bot.aclose()
        await llm.close()


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    logging.basicConfig(
        level=settings.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
