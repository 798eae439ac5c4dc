"""What a URL shows when printed: never any part of its password."""

from __future__ import annotations

import pytest

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
