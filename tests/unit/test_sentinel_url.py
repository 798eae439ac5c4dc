"""The redis+sentinel:// URL: what it names, and one line saying what to fix when it is wrong."""

from __future__ import annotations

import pytest
from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection, SentinelManagedSSLConnection

from resilient.config import Settings
from resilient.errors import ConfigError
from resilient.storage.connection import connect, mask_password
from resilient.storage.sentinel import SentinelURL, is_sentinel_url, parse_sentinel_url


def parse(url: str) -> SentinelURL:
    return parse_sentinel_url(url, mask_password(url))


@pytest.mark.parametrize(("url", "expected"), [
    ("redis+sentinel://h1:26379,h2:26380/mymaster/0",
     SentinelURL((("h1", 26379), ("h2", 26380)), "mymaster")),
    ("redis+sentinel://:s3cret@h1,h2/mymaster/2",
     SentinelURL((("h1", 26379), ("h2", 26379)), "mymaster", 2, password="s3cret")),
    ("redis+sentinel://app:p%40ss@10.0.0.1:5000/cache",
     SentinelURL((("10.0.0.1", 5000),), "cache", username="app", password="p@ss")),
    ("redis+sentinel://:p@ss@h1/m/", SentinelURL((("h1", 26379),), "m", password="p@ss")),
    ("rediss+sentinel://[::1]:26379,h2/m/1?sentinel_password=x",
     SentinelURL((("::1", 26379), ("h2", 26379)), "m", 1, sentinel_password="x", tls=True)),
])
def test_a_sentinel_url_names_the_sentinels_the_primary_and_the_logins(url: str, expected: SentinelURL) -> None:
    assert is_sentinel_url(url)
    assert parse(url) == expected


@pytest.mark.parametrize(("url", "says"), [
    ("redis+sentinel:///mymaster/0", ": no sentinel host;"),
    ("redis+sentinel://h1:26379", ": no primary name: add the name the sentinels monitor"),
    ("redis+sentinel://h1:26379/", ": no primary name"),
    ("redis+sentinel://h1:abc/m/0", "the port of sentinel h1 is 'abc', not a number"),
    ("redis+sentinel://h1/m/zero", "the database is 'zero', not a number"),
    ("redis+sentinel://h1/m/0/extra", "more than SERVICE/DB in the path"),
    ("redis+sentinel://h1,:26379/m", "a sentinel without a host"),
    ("redis+sentinel://h1/m?db=3", "unknown option(s) db (known: sentinel_password)"),
])
def test_a_wrong_sentinel_url_fails_in_one_line_that_says_what_to_do(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        connect(url)
    message = str(caught.value)
    assert says in message and "\n" not in message
    assert message.endswith("the form is redis+sentinel://[:password@]host1:26379,host2:26379/SERVICE[/DB]")


def test_the_message_about_a_wrong_url_hides_its_passwords() -> None:
    with pytest.raises(ConfigError) as caught:
        connect("redis+sentinel://:topsecret@h1/m/x?sentinel_password=alsosecret")
    assert "topsecret" not in str(caught.value) and "alsosecret" not in str(caught.value)
    assert mask_password("redis+sentinel://:a@b@h1,h2/m?sentinel_password=c") == \
        "redis+sentinel://:***@h1,h2/m?sentinel_password=***"


def test_a_sentinel_client_keeps_the_retries_timeouts_and_keepalive_of_every_connection() -> None:
    """Nothing is contacted yet: the client asks the sentinels for the primary on its first command."""
    plain = connect("redis://localhost:6379/0").connection_pool.connection_kwargs
    client = connect("redis+sentinel://:pw@h1:1,h2:2/mymaster/3")
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "mymaster"
    assert pool.connection_class is SentinelManagedConnection
    kwargs = pool.connection_kwargs
    for option in ("socket_timeout", "socket_connect_timeout", "socket_keepalive", "health_check_interval"):
        assert kwargs[option] == plain[option], option
    assert kwargs["retry"].get_retries() == plain["retry"].get_retries()
    assert (kwargs["db"], kwargs["password"]) == (3, "pw")
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
            for s in sentinels] == [("h1", 1), ("h2", 2)]
    assert all(s.connection_pool.connection_kwargs["password"] is None for s in sentinels)
    tls = connect("rediss+sentinel://h1/m?sentinel_password=sp").connection_pool
    assert tls.connection_class is SentinelManagedSSLConnection
    assert tls.sentinel_manager.sentinels[0].connection_pool.connection_kwargs["password"] == "sp"


@pytest.mark.parametrize(("value", "ok"), [("none", True), ("replica", True), ("all", False), ("", True)])
def test_durability_is_none_or_replica(value: str, ok: bool) -> None:
    env = {"RESILIENT_DURABILITY": value}
    if ok:
        assert Settings.from_env(env).durability == (value or "none")
        return
    with pytest.raises(ConfigError, match="RESILIENT_DURABILITY=replica waits for a replica"):
        Settings.from_env(env)
