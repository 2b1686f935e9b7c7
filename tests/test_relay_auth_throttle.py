"""Failed-login throttling (issue 19): after ``auth_fail_limit`` wrong passwords from one address (or for
one user) within the window, further attempts get 429 + ``Retry-After`` without a password check; a
right password clears the address. Real relay, real WebSocket handshakes."""

from __future__ import annotations

import base64
from pathlib import Path

import bcrypt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from wslarkbot.relay import run_relay
from wslarkbot.relay.testing import recv_json, test_config
from wslarkbot.relay.throttle import FailureThrottle

pytestmark = pytest.mark.timeout(60)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def attempt(url: str, password: str) -> tuple[int, str | None]:
    try:
        async with connect(url, additional_headers=basic("org_acme", password)) as ws:
            assert (await recv_json(ws))["type"] == "hello"
            return 101, None
    except InvalidStatus as exc:
        return exc.response.status_code, exc.response.headers.get("Retry-After")


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "aiohttp"])
async def test_wrong_passwords_are_throttled_with_429_and_retry_after(
    tmp_path: Path, fast_path: bool
) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("org_acme:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")
    config = test_config(htpasswd=str(htpasswd), auth_fail_limit=3, auth_fail_window=30, fast_path=fast_path)
    async with run_relay(config) as relay:
        url = relay.ws_url("org_acme")
        assert await attempt(url, "pw") == (101, None)
        assert [await attempt(url, f"wrong-{n}") for n in range(3)] == [(401, None)] * 3
        status, retry_after = await attempt(url, "wrong-3")
        assert status == 429 and retry_after is not None and 1 <= int(retry_after) <= 30
        assert (await attempt(url, "pw"))[0] == 429, "refused before any password check"


def test_the_throttle_counts_a_sliding_window_per_key_and_forgets_least_recent_keys() -> None:
    now = [0.0]
    throttle = FailureThrottle(2, 10.0, max_keys=2, clock=lambda: now[0])
    throttle.failed("a")
    throttle.failed("a")
    assert throttle.retry_after("a") == 10 and throttle.retry_after("b") is None
    now[0] = 10.5  # the first failures leave the window
    assert throttle.retry_after("a") is None
    throttle.failed("b")
    throttle.failed("c")
    throttle.failed("d")  # max_keys=2: "a" and "b" forgotten first
    assert throttle.retry_after("a") is None
    throttle.succeeded("d")
    assert FailureThrottle(0, 1.0).retry_after("x") is None  # 0: off


def test_one_address_guessing_many_users_is_throttled_but_a_loopback_proxy_is_not_one_client(
    tmp_path: Path,
) -> None:
    from wslarkbot.relay.auth import AccessPolicy
    from wslarkbot.relay.limits import LimitExceeded

    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("org_acme:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")
    policy = AccessPolicy(test_config(htpasswd=str(htpasswd), auth_fail_limit=2))

    def status(user: str, remote: str) -> int:
        try:
            policy.check([user], basic(user, "wrong"), remote)
        except LimitExceeded as exc:
            return exc.status
        return 101

    assert [status(f"org_{n}", "203.0.113.5") for n in range(3)] == [401, 401, 429]  # by address
    assert [status(f"org_{n}", "127.0.0.1") for n in range(3, 6)] == [401, 401, 401]  # proxy: by user only


async def test_failed_logins_count_on_every_node_sharing_redis(tmp_path: Path) -> None:
    """Two nodes, one Redis: wrong passwords spread over both nodes add up (issue 19)."""
    from system_programs import require
    from wslarkbot.relay.testing import RedisServer

    require("redis-server")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("org_acme:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")
    redis = await RedisServer(tmp_path).start()
    try:
        config = test_config(
            htpasswd=str(htpasswd), auth_fail_limit=3, auth_fail_window=30, redis_url=redis.url
        )
        async with run_relay(config) as a, run_relay(config) as b:
            urls = [a.ws_url("org_acme"), b.ws_url("org_acme")]
            tried = [await attempt(urls[n % 2], f"wrong-{n}") for n in range(3)]  # 2 on a, 1 on b
            assert tried == [(401, None)] * 3
            for url in urls:  # each node alone saw fewer than 3: only the shared count refuses
                status, retry_after = await attempt(url, "pw")
                assert status == 429 and retry_after is not None
    finally:
        await redis.stop()
