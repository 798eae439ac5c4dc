"""Connections: what a URL shows when printed, how the server knows us, what counts as Redis away."""

from __future__ import annotations

import pytest
import redis

from resilient.storage.connection import mask_password


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://u:p@ss@host:6379/0", "redis://u:***@host:6379/0"),
    ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
    ("redis://:pa/ss@host/0", "redis://:***@host/0"),
    ("redis://host:6379/0?password=secret&db=1", "redis://host:6379/0?password=***&db=1"),
    ("redis://user@host:6379/0", "redis://user@host:6379/0"),
    ("unix://:secret@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
])
def test_printed_urls_hide_the_whole_password(url: str, shown: str) -> None:
    """A raw '@' or '/' inside a password does not let its tail through to logs and messages."""
    assert mask_password(url) == shown


def test_the_server_sees_resilients_connections_by_name(redis_url: str) -> None:
    """CLIENT LIST names resilient's connections (worked out once, not read from package metadata on each)."""
    from resilient.storage.connection import connect

    client = connect(redis_url)
    try:
        me = client.client_info()
        assert me["lib-name"].startswith("redis-py(resilient_v"), me
    finally:
        client.close()


class _FailoverBetweenLoadAndRun(redis.Redis):
    """A real server that loses its scripts right after each SCRIPT LOAD, as a failover between redis-py's
    load and its EVALSHA would (the new primary never saw the script)."""

    def script_load(self, script):
        sha = super().script_load(script)
        self.script_flush()
        return sha


def test_a_script_lost_between_its_load_and_its_run_counts_as_redis_away(redis_url: str) -> None:
    """The worker then waits for Redis and tries again (keep_trying, its heartbeat), as for any failover,
    rather than stopping on an unexpected error."""
    from resilient.storage.connection import REDIS_AWAY, reason_for
    from resilient.storage.store import Store

    client = _FailoverBetweenLoadAndRun.from_url(redis_url)
    try:
        client.script_flush()
        with pytest.raises(REDIS_AWAY) as caught:
            Store(client).promote_due()
        assert "failover" in reason_for(caught.value)
    finally:
        client.close()
