"""dedup.py: each handler runs once per event.

The stores are tested without I/O (an injected clock for every TTL); the Bot integration end to end: the
Feishu simulator pushes duplicates (same event_id, and the same message under a new event_id) to
``create_webhook_app`` on a real aiohttp server on 127.0.0.1:0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from wslarkbot.bot import Bot
from wslarkbot.client import Dispatcher
from wslarkbot.dedup import (
    MAX_CACHED_RESPONSE_BYTES,
    ClaimState,
    Deduplicator,
    MemoryDeduplicator,
    SqliteDeduplicator,
    claim_event,
    event_key,
    key_kind,
    resolve_dedup,
)
from wslarkbot.events import CardAction, FeishuEvent, MessageEvent, parse_payload
from wslarkbot.exceptions import ConfigurationError
from wslarkbot.sim import FeishuSimulator, SimApp, payloads
from wslarkbot.webhook import create_webhook_app


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


StoreFactory = Callable[..., Deduplicator]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[StoreFactory]:
    """``make(**kwargs)``: a MemoryDeduplicator or a SqliteDeduplicator (file in tmp_path), closed after."""
    made: list[Deduplicator] = []

    def make(**kwargs: Any) -> Deduplicator:
        store: Deduplicator
        if request.param == "memory":
            store = MemoryDeduplicator(**kwargs)
        else:
            store = SqliteDeduplicator(tmp_path / "dedup.sqlite3", **kwargs)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


# -- the stores --------------------------------------------------------------------------------------


def test_a_key_is_claimed_once_and_then_reported_as_duplicate(make_store: StoreFactory) -> None:
    store = make_store()
    assert not store.seen("cli_a:om_1")
    assert store.claim("cli_a:om_1") is True
    assert store.seen("cli_a:om_1")
    assert store.claim("cli_a:om_1") is False  # pending: a concurrent duplicate
    store.mark_done("cli_a:om_1")
    assert store.claim("cli_a:om_1") is False  # done: a later duplicate
    assert store.claim("cli_a:om_2") is True
    assert len(store) == 2


def test_seen_records_nothing(make_store: StoreFactory) -> None:
    store = make_store()
    assert not store.seen("k")
    assert not store.seen("k")
    assert store.claim("k") is True


def test_released_claim_lets_a_retry_run_again(make_store: StoreFactory) -> None:
    """A failed handler releases its claim: the next delivery of that event claims it afresh."""
    store = make_store()
    assert store.claim("k")
    store.release("k")
    assert not store.seen("k")
    assert store.claim("k") is True


def test_release_after_done_keeps_the_key_done(make_store: StoreFactory) -> None:
    """A succeeded event never runs twice, even if a stray release follows."""
    store = make_store()
    assert store.claim("k")
    store.mark_done("k")
    store.release("k")
    assert store.claim("k") is False


def test_done_keys_expire_after_ttl(make_store: StoreFactory, clock: FakeClock) -> None:
    store = make_store(ttl=100, clock=clock)
    assert store.claim("k")
    store.mark_done("k")
    clock.advance(99)
    assert store.claim("k") is False
    clock.advance(1)
    assert not store.seen("k")
    assert store.claim("k") is True


def test_a_claim_never_finished_expires_after_claim_ttl(make_store: StoreFactory, clock: FakeClock) -> None:
    """A process that died mid-handler must not block the event for the whole ttl."""
    store = make_store(ttl=10_000, claim_ttl=60, clock=clock)
    assert store.claim("k")
    clock.advance(59)
    assert store.claim("k") is False
    clock.advance(1)
    assert store.claim("k") is True


def test_try_claim_tells_a_running_delivery_from_a_finished_one(make_store: StoreFactory) -> None:
    """Pending (running: not to be answered) and done (to be acknowledged) are different answers."""
    store = make_store()
    assert store.try_claim("k") is ClaimState.NEW
    assert store.try_claim("k") is ClaimState.PENDING
    store.release("k")
    assert store.try_claim("k") is ClaimState.NEW
    store.mark_done("k")
    assert store.try_claim("k") is ClaimState.DONE


def test_a_store_implementing_only_claim_reports_every_duplicate_as_done() -> None:
    """A third-party store written before try_claim keeps its old behaviour (duplicates acknowledged)."""

    class OnlyClaim(Deduplicator):
        def __init__(self) -> None:
            super().__init__()
            self.keys: set[str] = set()

        def claim(self, key: str) -> bool:
            won = key not in self.keys
            self.keys.add(key)
            return won

        def release(self, key: str) -> None:
            self.keys.discard(key)

        def seen(self, key: str) -> bool:
            return key in self.keys

        def _mark_done(self, key: str) -> None:
            self.keys.add(key)

        def __len__(self) -> int:
            return len(self.keys)

    store = OnlyClaim()
    assert store.try_claim("k") is ClaimState.NEW
    assert store.try_claim("k") is ClaimState.DONE


def test_memory_store_forgets_the_least_recently_used_key_past_max_entries(clock: FakeClock) -> None:
    store = MemoryDeduplicator(max_entries=3, clock=clock)
    for key in ("a", "b", "c"):
        assert store.claim(key)
        store.mark_done(key)
    assert store.claim("a") is False  # a duplicate hit makes "a" the most recently used
    assert store.claim("d")  # evicts "b", the least recently used
    assert len(store) == 3
    assert not store.seen("b")
    assert store.seen("a") and store.seen("c") and store.seen("d")


def test_memory_store_stays_bounded_under_many_keys(clock: FakeClock) -> None:
    store = MemoryDeduplicator(max_entries=100, ttl=5, clock=clock)
    for i in range(10_000):
        assert store.claim(f"k{i}")
        store.mark_done(f"k{i}")
        clock.advance(0.01)
    assert len(store._entries) <= 100


def test_sqlite_store_prunes_to_max_entries_least_recently_used_first(
    tmp_path: pathlib.Path, clock: FakeClock
) -> None:
    with SqliteDeduplicator(tmp_path / "d.db", max_entries=3, prune_every=1_000, clock=clock) as store:
        for key in ("a", "b", "c", "d", "e"):
            assert store.claim(key)
            store.mark_done(key)
            clock.advance(1)
        assert store.claim("a") is False  # touched: now the most recent
        clock.advance(1)
        assert store.prune() == 2
        assert len(store) == 3
        assert store.seen("a") and store.seen("d") and store.seen("e")
        assert not store.seen("b") and not store.seen("c")


def test_sqlite_store_prunes_by_itself_every_prune_every_claims(
    tmp_path: pathlib.Path, clock: FakeClock
) -> None:
    with SqliteDeduplicator(tmp_path / "d.db", max_entries=10, prune_every=5, clock=clock) as store:
        for i in range(100):
            assert store.claim(f"k{i}")
            clock.advance(1)
        (rows,) = store._conn.execute("SELECT COUNT(*) FROM wslarkbot_dedup").fetchone()
        assert rows <= 10 + 5


def test_sqlite_store_remembers_done_keys_across_reopen(tmp_path: pathlib.Path, clock: FakeClock) -> None:
    """A restarted bot must not re-handle an event Feishu re-sends after the restart."""
    path = tmp_path / "dedup.sqlite3"
    with SqliteDeduplicator(path, clock=clock) as store:
        assert store.claim("cli_a:om_done")
        store.mark_done("cli_a:om_done")
        assert store.claim("cli_a:om_failed")
        store.release("cli_a:om_failed")
    with SqliteDeduplicator(path, clock=clock, ttl=100) as reopened:
        assert reopened.claim("cli_a:om_done") is False
        assert reopened.claim("cli_a:om_failed") is True


def test_sqlite_store_forgets_expired_keys_when_reopened(tmp_path: pathlib.Path, clock: FakeClock) -> None:
    path = tmp_path / "dedup.sqlite3"
    with SqliteDeduplicator(path, ttl=100, clock=clock) as store:
        assert store.claim("k")
        store.mark_done("k")
    clock.advance(100)
    with SqliteDeduplicator(path, ttl=100, clock=clock) as reopened:
        assert len(reopened) == 0
        (rows,) = reopened._conn.execute("SELECT COUNT(*) FROM wslarkbot_dedup").fetchone()
        assert rows == 0  # pruned on open, not only hidden
        assert reopened.claim("k") is True


def test_sqlite_store_uses_wal(tmp_path: pathlib.Path) -> None:
    with SqliteDeduplicator(tmp_path / "d.db") as store:
        (mode,) = store._conn.execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"


def test_two_sqlite_stores_on_one_file_agree(tmp_path: pathlib.Path) -> None:
    """Two processes (here: connections) sharing the file: a claim by one is a duplicate for the other."""
    with SqliteDeduplicator(tmp_path / "d.db") as one, SqliteDeduplicator(tmp_path / "d.db") as two:
        assert one.claim("k")
        assert two.claim("k") is False
        one.release("k")
        assert two.claim("k") is True


# -- SQLite: claims of dead processes ----------------------------------------------------------------------

#: A process that claims argv[2] in the store argv[1], says so, and holds the claim until stdin closes.
CLAIMER = """
import sys
from wslarkbot.dedup import SqliteDeduplicator
store = SqliteDeduplicator(sys.argv[1])
assert store.claim(sys.argv[2])
print("claimed", flush=True)
sys.stdin.read()
"""

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")


@contextlib.contextmanager
def claimer_process(db: pathlib.Path, key: str) -> Iterator[subprocess.Popen[str]]:
    """A real process holding a pending claim of ``key`` (yielded once the claim is made); killed and
    reaped at the end if still there."""
    argv = [sys.executable, "-c", CLAIMER, str(db), key]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "claimed\n"
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()


@posix_only
def test_sqlite_store_keeps_a_live_process_claim_and_takes_over_at_once_when_it_died(
    tmp_path: pathlib.Path,
) -> None:
    """The process running a handler is alive: its claim stands (the event is not run twice). Once it is
    gone (here it exits without finishing; SIGKILL alike), the next delivery runs it at once, without
    waiting for claim_ttl (10 min by default)."""
    db = tmp_path / "d.db"
    with claimer_process(db, "k") as claimer, SqliteDeduplicator(db) as store:
        assert store.try_claim("k") is ClaimState.PENDING
        assert claimer.stdin is not None
        claimer.stdin.close()  # it exits, its claim unfinished
        claimer.wait(10)
        assert store.try_claim("k") is ClaimState.NEW
        assert store.try_claim("k") is ClaimState.PENDING  # now ours, and we are alive


@posix_only
def test_sqlite_store_takes_over_the_claim_of_a_killed_process(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "d.db"
    with claimer_process(db, "k") as claimer:
        claimer.kill()
        claimer.wait(10)
    with SqliteDeduplicator(db) as store:
        assert store.try_claim("k") is ClaimState.NEW


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc (Linux)")
def test_sqlite_store_takes_over_the_claim_of_a_killed_process_not_yet_reaped(tmp_path: pathlib.Path) -> None:
    """A killed process its parent has not reaped yet is a zombie: its pid still exists, but it is dead."""
    db = tmp_path / "d.db"
    with claimer_process(db, "k") as claimer, SqliteDeduplicator(db) as store:
        claimer.send_signal(signal.SIGKILL)
        os.waitid(os.P_PID, claimer.pid, os.WEXITED | os.WNOWAIT)  # dead, left a zombie (not reaped)
        assert store.try_claim("k") is ClaimState.NEW
        claimer.wait(10)


def _owner_parts(db: pathlib.Path, key: str) -> list[str]:
    """``[scope, pid, start, token]`` of ``key``'s row."""
    with sqlite3.connect(db) as conn:
        (owner,) = conn.execute("SELECT owner FROM wslarkbot_dedup WHERE key = ?", (key,)).fetchone()
    return str(owner).rsplit(" ", 3)


def _set_owner(db: pathlib.Path, key: str, owner: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE wslarkbot_dedup SET owner = ? WHERE key = ?", (owner, key))


@posix_only
def test_a_claim_made_under_this_pid_by_an_earlier_process_is_taken_over(tmp_path: pathlib.Path) -> None:
    """pid reuse (a container restarted: the bot is pid 1 again): same pid, but not a live store's token."""
    db = tmp_path / "d.db"
    with SqliteDeduplicator(db) as store:
        assert store.try_claim("k") is ClaimState.NEW
        scope, pid, start, _ = _owner_parts(db, "k")
        assert int(pid) == os.getpid()
        _set_owner(db, "k", f"{scope} {pid} {start} {'0' * 32}")
        assert store.try_claim("k") is ClaimState.NEW


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc (Linux)")
def test_a_claim_whose_pid_now_runs_another_process_is_taken_over(tmp_path: pathlib.Path) -> None:
    """The claimer's pid is alive but started at another time: another process reuses the pid."""
    db = tmp_path / "d.db"
    with SqliteDeduplicator(db) as store:
        assert store.try_claim("k") is ClaimState.NEW
        scope, _, start, token = _owner_parts(db, "k")
        _set_owner(db, "k", f"{scope} {os.getppid()} {int(start) + 1} {token}1")
        assert store.try_claim("k") is ClaimState.NEW


def test_a_claim_made_on_another_host_or_before_owners_blocks_until_claim_ttl(
    tmp_path: pathlib.Path, clock: FakeClock
) -> None:
    """Whether a process on another host (or container) lives cannot be told: the claim expires instead."""
    db = tmp_path / "d.db"
    with SqliteDeduplicator(db, clock=clock, claim_ttl=60) as store:
        for key in ("remote", "legacy"):
            assert store.try_claim(key) is ClaimState.NEW
        _, pid, start, _ = _owner_parts(db, "remote")
        _set_owner(db, "remote", f"elsewhere/boot/pid:[1] {pid} {start} {'0' * 32}")
        _set_owner(db, "legacy", "")
        clock.advance(59)
        assert store.try_claim("remote") is ClaimState.PENDING
        assert store.try_claim("legacy") is ClaimState.PENDING
        clock.advance(1)
        assert store.try_claim("remote") is ClaimState.NEW
        assert store.try_claim("legacy") is ClaimState.NEW


def test_a_database_from_before_the_owner_column_is_upgraded_on_open(
    tmp_path: pathlib.Path, clock: FakeClock
) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE wslarkbot_dedup (key TEXT PRIMARY KEY, done INTEGER NOT NULL, "
            "expires REAL NOT NULL, touched REAL NOT NULL)"
        )
        conn.execute("INSERT INTO wslarkbot_dedup VALUES ('done', 1, ?, ?)", (clock() + 100, clock()))
        conn.execute("INSERT INTO wslarkbot_dedup VALUES ('pending', 0, ?, ?)", (clock() + 100, clock()))
    with SqliteDeduplicator(db, clock=clock) as store, SqliteDeduplicator(db, clock=clock) as again:
        assert store.try_claim("done") is ClaimState.DONE
        assert again.try_claim("pending") is ClaimState.PENDING  # unknown claimer: wait for its expiry
        assert store.try_claim("new") is ClaimState.NEW


def test_a_release_by_a_store_whose_claim_was_taken_over_keeps_the_new_claim(
    tmp_path: pathlib.Path, clock: FakeClock
) -> None:
    """A handler slower than claim_ttl: another delivery took its claim over; when the slow one then
    fails, its release must not free the claim the other delivery now runs under."""
    db = tmp_path / "d.db"
    with (
        SqliteDeduplicator(db, clock=clock, claim_ttl=60) as slow,
        SqliteDeduplicator(db, clock=clock, claim_ttl=60) as other,
    ):
        assert slow.try_claim("k") is ClaimState.NEW
        clock.advance(60)
        assert other.try_claim("k") is ClaimState.NEW
        slow.release("k")
        assert slow.try_claim("k") is ClaimState.PENDING
        other.release("k")
        assert slow.try_claim("k") is ClaimState.NEW


def test_concurrent_claims_of_one_key_have_exactly_one_winner(make_store: StoreFactory) -> None:
    """Sync handlers run in a thread pool: of N simultaneous deliveries of one event, one runs."""
    store = make_store()
    threads, keys = 16, 200
    barrier = threading.Barrier(threads)

    def worker(_: int) -> list[str]:
        barrier.wait(timeout=10)
        won = []
        for i in range(keys):
            if store.claim(f"k{i}"):
                won.append(f"k{i}")
                store.mark_done(f"k{i}")
        return won

    with ThreadPoolExecutor(threads) as pool:
        winners = [key for won in pool.map(worker, range(threads)) for key in won]
    assert sorted(winners) == sorted(f"k{i}" for i in range(keys))


def test_callback_responses_are_cached_bounded_and_size_limited(clock: FakeClock) -> None:
    store = MemoryDeduplicator(clock=clock, max_responses=2)
    for key in ("a", "b", "c"):
        store.claim(key)
        store.mark_done(key, {"toast": {"type": "info", "content": key}})
    assert store.cached_response("a") is None  # evicted: at most 2 kept
    assert store.cached_response("c") == {"toast": {"type": "info", "content": "c"}}
    store.claim("big")
    store.mark_done("big", {"card": {"x": "y" * MAX_CACHED_RESPONSE_BYTES}})
    assert store.cached_response("big") is None
    assert store.claim("big") is False  # not cached, but still done


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl": 0}, "ttl"),
        ({"max_entries": 0}, "max_entries"),
        ({"claim_ttl": -1}, "claim_ttl"),
        ({"max_responses": -1}, "max_responses"),
    ],
)
def test_stores_reject_nonsense_limits(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        MemoryDeduplicator(**kwargs)


def test_resolve_dedup_accepts_true_a_store_or_off_and_nothing_else() -> None:
    assert resolve_dedup(None) is None and resolve_dedup(False) is None
    assert isinstance(resolve_dedup(True), MemoryDeduplicator)
    store = MemoryDeduplicator()
    assert resolve_dedup(store) is store
    assert store and len(store) == 0  # an empty store is still "a store" in a boolean context
    with pytest.raises(ConfigurationError):
        resolve_dedup("yes")  # type: ignore[arg-type]


# -- keys ----------------------------------------------------------------------------------------------


@pytest.fixture
def app() -> SimApp:
    return SimApp.random()


def test_message_keys_are_app_id_and_message_id_whatever_the_event_id(app: SimApp) -> None:
    payload = payloads.text_message(app, "hi")
    first, again = parse_payload(payload), parse_payload(payloads.with_new_event_id(payload))
    assert isinstance(first, MessageEvent)
    assert event_key(app.app_id, first) == f"{app.app_id}:{first.message_id}"
    assert event_key(app.app_id, again) == event_key(app.app_id, first)
    assert event_key("cli_other", first) != event_key(app.app_id, first)
    assert key_kind(first) == "message_id"


def test_key_kinds_name_what_the_key_is_made_of(app: SimApp) -> None:
    assert key_kind(parse_payload(payloads.app_ticket(app))) == "uuid"
    assert key_kind(parse_payload(payloads.card_action(app, {"k": 1}))) == "event_id"
    assert key_kind(parse_payload(payloads.legacy_card_action(app, {"k": 1}))) == "card_token"
    preview = payloads.url_preview(app, "https://example.com")
    del preview["header"]["event_id"]
    assert key_kind(parse_payload(preview)) == "content_hash"


def test_the_challenge_is_never_deduplicated(app: SimApp) -> None:
    challenge = parse_payload(payloads.url_verification(app))
    store = MemoryDeduplicator()
    assert event_key(app.app_id, challenge) is None
    assert not claim_event(store, app.app_id, challenge).duplicate
    assert not claim_event(store, app.app_id, challenge).duplicate
    assert len(store) == 0


def test_a_duplicate_is_logged_at_info_with_its_key_kind_and_no_content(
    app: SimApp, caplog: pytest.LogCaptureFixture
) -> None:
    event = parse_payload(payloads.text_message(app, "secret words"))
    store = MemoryDeduplicator()
    claim_event(store, app.app_id, event, "req-1").finish(True)
    with caplog.at_level(logging.INFO, logger="wslarkbot.dedup"):
        claim = claim_event(store, app.app_id, event, "req-2")
    assert claim.duplicate and claim.duplicate_response(event) is None
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert "req-2" in record.getMessage() and "message_id" in record.getMessage()
    assert "secret words" not in record.getMessage()


# -- end to end: the simulator -> create_webhook_app -> Bot ----------------------------------------------

Serve = Callable[[Bot], Awaitable[str]]


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(bot) -> url`` of ``create_webhook_app(bot)`` on 127.0.0.1:0."""
    runners: list[web.AppRunner] = []

    async def start(bot: Bot) -> str:
        runner = web.AppRunner(create_webhook_app(bot), shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/webhook/{bot.app_id}"

    yield start
    for runner in runners:
        await runner.cleanup()


def make_bot(app: SimApp, dedup: bool | Deduplicator | None) -> Bot:
    return Bot(
        app.app_id, verification_token=app.verification_token, encrypt_key=app.encrypt_key, dedup=dedup
    )


@pytest.mark.parametrize(("dedup", "runs"), [(True, 1), (None, 3)])
async def test_each_handler_runs_once_per_message_whatever_feishu_resends(
    sim_app: SimApp,
    serve: Serve,
    feishu_sim_factory: Callable[..., FeishuSimulator],
    dedup: bool | None,
    runs: int,
) -> None:
    """Feishu re-pushes a message under its event_id and again under a new one; with dedup=True both
    handlers run once, and every push is acked 200 (so Feishu stops); without dedup they run 3 times."""
    bot = make_bot(sim_app, dedup)
    texts: list[str | None] = []
    everything: list[FeishuEvent] = []

    @bot.on_text
    async def on_text(event: MessageEvent) -> None:  # async: awaited on the loop
        texts.append(event.text)

    bot.on_event(everything.append)  # def: runs in the executor

    sim = feishu_sim_factory(await serve(bot))
    result = await sim.send_text_message("hello", duplicate=True, duplicate_message_new_event_id=True)
    assert result.delivered and len(result.duplicates) == 2
    assert all(d.delivered and d.retries == 0 for d in result.duplicates)
    assert texts == ["hello"] * runs
    assert len(everything) == runs


async def test_a_failed_handler_runs_again_on_the_resend_and_a_succeeded_one_never(
    sim_app: SimApp, serve: Serve, feishu_sim_factory: Callable[..., FeishuSimulator]
) -> None:
    """First delivery: the handler raises (released); the same-event_id resend runs it again and it
    succeeds; the new-event_id resend of the same message is then a duplicate."""
    bot = make_bot(sim_app, True)
    calls: list[str] = []

    @bot.on_text
    def flaky(event: MessageEvent) -> None:
        calls.append(event.message_id)
        if len(calls) == 1:
            raise RuntimeError("transient failure")

    sim = feishu_sim_factory(await serve(bot))
    result = await sim.send_text_message("hi", duplicate=True, duplicate_message_new_event_id=True)
    assert result.delivered
    assert len(calls) == 2 and calls[0] == calls[1]


async def test_a_resend_while_the_first_delivery_still_runs_is_answered_503_and_the_next_one_acked(
    sim_app: SimApp, serve: Serve, feishu_sim_factory: Callable[..., FeishuSimulator]
) -> None:
    """A handler slower than Feishu's timeout: Feishu retries while it still runs; that retry is answered
    503 at once (not 200: were the process to die now, the event would be lost) without waiting for the
    chat's ordering lock and without running the handler; Feishu's next retry, once the handler is done,
    is acked 200."""
    turned_away = asyncio.Event()

    class Watched(MemoryDeduplicator):
        def try_claim(self, key: str) -> ClaimState:
            state = super().try_claim(key)
            if state is ClaimState.PENDING:
                turned_away.set()  # claims run on the loop thread (the dispatch flow)
            return state

    bot = make_bot(sim_app, Watched())
    calls: list[str | None] = []

    @bot.on_text
    async def slow(event: MessageEvent) -> None:
        calls.append(event.text)
        await asyncio.wait_for(turned_away.wait(), 10)  # finish only once a retry was turned away

    sim = feishu_sim_factory(await serve(bot), event_timeout=0.2)
    result = await sim.send_text_message("slow")
    statuses = [a.status for a in result.attempts]
    assert result.delivered
    assert statuses[0] is None and statuses[1] == 503, statuses  # timed out; the retry: still in progress
    assert statuses[-1] == 200 and set(statuses[1:-1]) == {503}, statuses
    assert calls == ["slow"]


def plain_request(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


async def test_the_webhook_answers_503_with_retry_after_while_the_same_event_is_being_handled(
    sim_app_plain: SimApp, serve: Serve
) -> None:
    bot = make_bot(sim_app_plain, True)
    started, finish = asyncio.Event(), asyncio.Event()

    @bot.on_text
    async def busy(event: MessageEvent) -> None:
        started.set()
        await asyncio.wait_for(finish.wait(), 10)

    url = await serve(bot)
    body = plain_request(payloads.text_message(sim_app_plain, "busy"))
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        first = asyncio.ensure_future(http.post(url, content=body, headers=headers))
        await asyncio.wait_for(started.wait(), 10)
        during = await http.post(url, content=body, headers=headers)
        finish.set()
        done = await first
        after = await http.post(url, content=body, headers=headers)
    assert during.status_code == 503 and during.json() == {"msg": "in progress"}
    assert int(during.headers["Retry-After"]) > 0
    assert done.status_code == after.status_code == 200


async def test_a_restarted_bot_with_sqlite_does_not_rehandle_a_resent_event(
    sim_app: SimApp,
    serve: Serve,
    feishu_sim_factory: Callable[..., FeishuSimulator],
    tmp_path: pathlib.Path,
) -> None:
    payload = payloads.text_message(sim_app, "once")
    calls: list[str] = []
    for _ in range(2):  # the bot process "restarts": a new Bot, store and server on the same file
        with SqliteDeduplicator(tmp_path / "dedup.sqlite3") as store:
            bot = make_bot(sim_app, store)
            bot.on_text(lambda event: calls.append(event.message_id))
            sim = feishu_sim_factory(await serve(bot))
            assert (await sim.send_event(payloads.with_new_event_id(payload))).delivered
    assert len(calls) == 1


async def test_a_replayed_card_action_runs_once_and_gets_the_first_response(
    sim_app: SimApp, serve: Serve, feishu_sim_factory: Callable[..., FeishuSimulator]
) -> None:
    """Feishu never retries callbacks, but a relay replay may deliver one twice: the handler runs once,
    the replay is answered with the cached response."""
    bot = make_bot(sim_app, True)
    clicks: list[Any] = []

    @bot.on_card_action
    def approve(event: CardAction) -> dict[str, Any]:
        clicks.append(event.value)
        return {"toast": {"type": "success", "content": f"approved #{len(clicks)}"}}

    sim = feishu_sim_factory(await serve(bot))
    payload = payloads.card_action(sim_app, {"approve": 42})
    first = await sim.send_callback(payload)
    replay = await sim.send_callback(payload)
    other_click = await sim.send_card_action({"approve": 42})  # a real second click: a new event_id
    assert first.ok and replay.ok and other_click.ok
    assert first.response == replay.response == {"toast": {"type": "success", "content": "approved #1"}}
    assert other_click.response == {"toast": {"type": "success", "content": "approved #2"}}
    assert len(clicks) == 2


# -- the Bot without a transport: thread pool and cancellation ------------------------------------------


def plain_envelope(payload: dict[str, Any]) -> dict[str, Any]:
    """A relay envelope of a plaintext, unsigned request (an app without Encrypt Key)."""
    return {"headers": {"content-type": "application/json"}, "body": payload}


def test_sync_deliveries_of_one_message_from_a_thread_pool_run_the_handler_once(
    sim_app_plain: SimApp,
) -> None:
    """A sync front (the client's thread pool) delivering the same message concurrently, under both of
    its event_ids: one handler run per message."""
    bot = make_bot(sim_app_plain, True)
    runs: list[str] = []
    lock = threading.Lock()

    @bot.on_text
    def count(event: MessageEvent) -> None:
        with lock:
            runs.append(event.message_id)

    messages = [payloads.text_message(sim_app_plain, f"m{i}") for i in range(20)]
    deliveries = [plain_envelope(p) for p in messages]
    deliveries += [plain_envelope(payloads.with_new_event_id(p)) for p in messages]
    threads = 8
    barrier = threading.Barrier(threads)

    def deliver_all(_: int) -> None:
        barrier.wait(timeout=10)  # every thread delivers every copy, starting together
        for envelope in deliveries:
            bot.process_message(envelope)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(deliver_all, range(threads)))
    assert sorted(runs) == sorted(p["event"]["message"]["message_id"] for p in messages)


async def test_a_cancelled_dispatch_releases_its_claim(sim_app_plain: SimApp) -> None:
    """A delivery cancelled mid-handler (shutdown) did not complete: the next delivery runs it."""
    bot = make_bot(sim_app_plain, True)
    started = asyncio.Event()
    runs: list[str | None] = []

    @bot.on_text
    async def handler(event: MessageEvent) -> None:
        runs.append(event.text)
        if len(runs) == 1:
            started.set()
            await asyncio.Event().wait()  # hangs until cancelled

    envelope = plain_envelope(payloads.text_message(sim_app_plain, "again"))
    task = asyncio.ensure_future(bot.adispatch(envelope))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    result = await bot.adispatch(envelope)
    assert result.skipped is None and runs == ["again", "again"]
    assert (await bot.adispatch(envelope)).skipped == "duplicate"


async def test_a_delivery_of_an_event_still_running_is_skipped_unanswered_and_a_finished_one_acked(
    sim_app_plain: SimApp,
) -> None:
    bot = make_bot(sim_app_plain, True)
    started, finish = asyncio.Event(), asyncio.Event()
    runs: list[str | None] = []

    @bot.on_text
    async def handler(event: MessageEvent) -> None:
        runs.append(event.text)
        started.set()
        await asyncio.wait_for(finish.wait(), 10)

    envelope = plain_envelope(payloads.text_message(sim_app_plain, "busy"))
    first = asyncio.ensure_future(bot.adispatch(envelope))
    await asyncio.wait_for(started.wait(), 10)
    during = await bot.adispatch(envelope)
    finish.set()
    done = await first
    after = await bot.adispatch(envelope)
    assert (during.skipped, during.no_answer, during.response) == ("in-progress", True, None)
    assert (done.skipped, done.no_answer) == (None, False)
    assert (after.skipped, after.no_answer) == ("duplicate", False)
    assert runs == ["busy"]


async def test_a_replayed_callback_still_running_gets_no_answer_and_later_the_first_response(
    sim_app_plain: SimApp,
) -> None:
    """Not ``{}`` while the first still runs: that would pre-empt (or replace) the real response."""
    bot = make_bot(sim_app_plain, True)
    started, finish = asyncio.Event(), asyncio.Event()

    @bot.on_card_action
    async def approve(event: CardAction) -> dict[str, Any]:
        started.set()
        await asyncio.wait_for(finish.wait(), 10)
        return {"toast": {"type": "success", "content": "approved"}}

    envelope = plain_envelope(payloads.card_action(sim_app_plain, {"approve": 1}))
    first = asyncio.ensure_future(bot.adispatch(envelope))
    await asyncio.wait_for(started.wait(), 10)
    during = await bot.adispatch(envelope)
    finish.set()
    done = await first
    after = await bot.adispatch(envelope)
    assert during.no_answer and during.response is None
    assert done.response == after.response == {"toast": {"type": "success", "content": "approved"}}
    assert not after.no_answer and after.skipped == "duplicate"


class RecordingSink:
    """A relay connection (protocol 2) that records the acks and replies the client sends."""

    acks = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def reply(self, request_id: str, body: Any) -> None:
        self.sent.append(("reply", request_id))

    async def ack(self, request_id: str) -> None:
        self.sent.append(("ack", request_id))


async def test_the_client_neither_acks_nor_replies_to_a_delivery_of_an_event_still_running(
    sim_app_plain: SimApp,
) -> None:
    """So the relay answers Feishu 504 (or hands the event to another group member) and it comes again."""
    bot = make_bot(sim_app_plain, True)
    started, finish = asyncio.Event(), asyncio.Event()

    @bot.on_text
    async def handler(event: MessageEvent) -> None:
        started.set()
        await asyncio.wait_for(finish.wait(), 10)

    envelope = plain_envelope(payloads.text_message(sim_app_plain, "busy"))
    sink = RecordingSink()
    with ThreadPoolExecutor(2) as pool:
        dispatcher = Dispatcher(executor=pool, ack_after=10.0)
        first = await dispatcher.submit(bot, envelope, sink, request_id="r1")
        await asyncio.wait_for(started.wait(), 10)
        await asyncio.wait_for(await dispatcher.submit(bot, envelope, sink, request_id="r2"), 10)
        assert sink.sent == []
        finish.set()
        await asyncio.wait_for(first, 10)
        await asyncio.wait_for(await dispatcher.submit(bot, envelope, sink, request_id="r3"), 10)
    assert sink.sent == [("ack", "r1"), ("ack", "r3")]
