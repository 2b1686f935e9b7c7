"""A local OpenAI-compatible server for tests: ``POST /v1/chat/completions`` streams scripted answers (SSE).

Scripts are chosen by the request's last user message, so the order in which concurrent requests arrive
does not matter. A script is a list of steps::

    "text"              a chunk (``choices[0].delta.content``)
    Set("name")         set a named asyncio.Event (the test, or another script, can wait for it)
    WaitFor("name")     wait until that event is set before going on
    Fail(500)           answer HTTP 500 with an OpenAI error body, before any chunk
    Hang()              stop sending and hold the connection open until the server stops

Unknown questions get ``DEFAULT_ANSWER``. Every request body is kept in :attr:`FakeOpenAI.requests`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["DEFAULT_ANSWER", "Fail", "FakeOpenAI", "Hang", "Set", "WaitFor"]

DEFAULT_ANSWER = ["Hello", " there", "!"]


@dataclass(frozen=True)
class Set:
    name: str


@dataclass(frozen=True)
class WaitFor:
    name: str


@dataclass(frozen=True)
class Fail:
    status: int = 500
    message: str = "The server had an error while processing your request."


@dataclass(frozen=True)
class Hang:
    pass


class FakeOpenAI:
    """``async with FakeOpenAI() as llm:`` serves on 127.0.0.1:0; ``llm.base_url`` ends with ``/v1``."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.events: dict[str, asyncio.Event] = {}
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.base_url = ""

    def script(self, question: str, *steps: Any) -> None:
        """Answer requests whose last user message is ``question`` with ``steps``."""
        self.scripts[question] = list(steps)

    def event(self, name: str) -> asyncio.Event:
        return self.events.setdefault(name, asyncio.Event())

    def questions(self) -> list[str]:
        return [r["messages"][-1]["content"] for r in self.requests]

    def request_for(self, question: str) -> dict[str, Any]:
        [request] = [r for r in self.requests if r["messages"][-1]["content"] == question]
        return request

    async def __aenter__(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        assert request.headers.get("Authorization", "").startswith("Bearer "), "no API key sent"
        assert body.get("stream") is True, "the bot must stream"
        steps = self.scripts.get(body["messages"][-1]["content"], DEFAULT_ANSWER)
        if steps and isinstance(steps[0], Fail):
            error = {"error": {"message": steps[0].message, "type": "server_error", "code": None}}
            return web.json_response(error, status=steps[0].status)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i, step in enumerate(steps):
            if isinstance(step, Set):
                self.event(step.name).set()
            elif isinstance(step, WaitFor):
                await self.event(step.name).wait()
            elif isinstance(step, Hang):
                await self._stopping.wait()
                return response
            else:
                await response.write(self._chunk(body.get("model", ""), str(step), first=i == 0))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @staticmethod
    def _chunk(model: str, text: str, *, first: bool) -> bytes:
        delta: dict[str, Any] = {"content": text}
        if first:
            delta["role"] = "assistant"
        chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        return f"data: {json.dumps(chunk)}\n\n".encode()
