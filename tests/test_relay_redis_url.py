"""``--redis`` URLs, Sentinel ones included (relay/redis_url.py, issue 22)."""

from __future__ import annotations

import pytest

from wslarkbot.exceptions import ConfigurationError
from wslarkbot.relay.config import RelayConfig
from wslarkbot.relay.redis_url import SentinelTarget, parse_sentinel_url


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_database() -> None:
    url = "redis+sentinel://:s3cret@10.0.0.5:26379,10.0.0.6:26380/mymaster/2"
    target = parse_sentinel_url(url)
    assert target == SentinelTarget((("10.0.0.5", 26379), ("10.0.0.6", 26380)), "mymaster", 2, None, "s3cret")
    assert "s3cret" not in repr(target)
    assert parse_sentinel_url("rediss+sentinel://h:26379/m").tls
    assert parse_sentinel_url("redis+sentinel://h:26379/m").db == 0


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel:///mymaster",
        "redis+sentinel://h/mymaster",
        "redis+sentinel://h:99999/mymaster",
        "redis+sentinel://h:26379",
        "redis+sentinel://h:26379/m/x",
        "http://h:6379/0",
    ],
)
def test_bad_redis_urls_are_refused_at_start(url: str) -> None:
    with pytest.raises(ConfigurationError):
        RelayConfig(redis_url=url)


def test_the_wait_for_replicas_is_automatic_with_sentinel() -> None:
    from wslarkbot.relay.app import default_hub

    pytest.importorskip("redis")
    plain = default_hub(RelayConfig(redis_url="redis://127.0.0.1:1/0"))
    sentinel = default_hub(RelayConfig(redis_url="redis+sentinel://127.0.0.1:1/mymaster"))
    explicit = default_hub(RelayConfig(redis_url="redis://127.0.0.1:1/0", redis_wait_replicas=2))
    assert [plain.wait_replicas, sentinel.wait_replicas, explicit.wait_replicas] == [0, 1, 2]  # type: ignore[attr-defined]
