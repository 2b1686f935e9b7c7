"""The broadcast race shared by the gateway's hub and cluster router (relay/longconn/race.py), no sockets."""

from __future__ import annotations

import asyncio

import pytest

from wslarkbot.relay.longconn.race import first_success


async def _answer(value: dict, gate: asyncio.Event | None = None) -> dict:
    if gate is not None:
        await gate.wait()
    return value


async def _fail(exc: BaseException) -> dict:
    raise exc


async def test_first_code_200_wins_and_the_slower_attempts_are_cancelled():
    never = asyncio.Event()
    slow = asyncio.ensure_future(_answer({"code": 200, "who": "slow"}, never))
    race = await first_success([_answer({"code": 500}), _answer({"code": 200, "who": "fast"}), slow])
    assert race.ok and race.answer == {"code": 200, "who": "fast"}
    assert slow.cancelled()


async def test_without_a_success_the_last_answer_and_the_errors_are_reported():
    race = await first_success([_answer({"code": 500}), _fail(LookupError("gone"))])
    assert not race.ok
    assert race.answer == {"code": 500}
    assert [type(e) for e in race.errors] == [LookupError]


async def test_a_fatal_error_is_raised_at_once():
    never = asyncio.Event()
    with pytest.raises(KeyError):
        await first_success([_fail(KeyError("x")), _answer({"code": 200}, never)], fatal=lambda e: True)


async def test_the_deadline_ends_the_race_with_no_answer():
    never = asyncio.Event()
    loop = asyncio.get_running_loop()
    race = await first_success([_answer({"code": 200}, never)], deadline=loop.time() + 0.05)
    assert race.answer is None and race.errors == []
