"""Redis connections: which URL, a client that retries with backoff, a reachability check in plain words."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from importlib import metadata
from typing import TYPE_CHECKING, Callable, TypeVar
from urllib.parse import urlsplit

import redis
from redis._parsers.base import BaseParser as _RedisParser
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import (
    AuthenticationError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError

from ..errors import ConfigError, RedisUnavailable
from .sentinel import connect_sentinel, diagnose, is_sentinel_url
from .server import ensure_server

if TYPE_CHECKING:
    from ..config import Settings

RETRIES = 10  # with the backoff below: keeps trying for ~15 s, long enough for a server restart
BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0
CONNECT_TIMEOUT = 5.0
# A reply that never comes (a connection dropped without a reset) fails after this, then is retried. The
# longest blocking command on these connections is the worker's 1 s dequeue (BLMOVE/BLPOP); RQ itself
# asks for dequeue timeout + 10 s and would raise a smaller value to that.
SOCKET_TIMEOUT = 30.0
CHECK_TIMEOUT = 5.0  # whole check: half to connect, half for the reply
HEALTH_CHECK_INTERVAL = 30
WAIT_FIRST = 0.5  # seconds a process waits before it asks a Redis that failed it again, doubling ...
WAIT_CAP = 10.0  # ... up to this (below the health probe's 30 s max age: it ticks between asks)
log = logging.getLogger("resilient.connection")
T = TypeVar("T")


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


# What CLIENT SETINFO tells the server (CLIENT LIST shows it), worked out once: without it redis-py reads its
# package metadata for every connection it opens, ~0.3 ms of CPU each time, and every forked horse opens one.
DRIVER_INFO = DriverInfo().add_upstream_driver("resilient", _package_version("resilient"))


class NoReplicasError(ResponseError):
    """The primary refuses writes: fewer replicas in sync than its min-replicas-to-write."""


# redis-py names no class for this refusal (a plain ResponseError otherwise); its parser maps an error's first
# word to a class, for commands, scripts and pipelines alike (pinned in tests/unit/test_rq_pins.py)
_RedisParser.EXCEPTION_CLASSES["NOREPLICAS"] = NoReplicasError

# Redis cannot take our writes for now: unreachable, out of memory (maxmemory with noeviction), a replica
# after a failover, a primary short of in-sync replicas, or a server that lost a script between redis-py
# loading it and running it (a failover in between: redis-py's Script reloads once, then raises). None of it
# is the job's fault: wait, and resume from the last checkpoint.
REDIS_AWAY = (RedisConnectionError, RedisTimeoutError, OutOfMemoryError, ReadOnlyError, NoReplicasError,
              NoScriptError)

REFUSED = (
    "connection refused — is the server running? start one or unset REDIS_URL to use the embedded server"
)
AUTH_FAILED = "authentication failed — check the password in REDIS_URL"
# Up to the last "@" before any query: a raw "@" or "/" in the password is masked too (as redis-py reads it).
_USERINFO_PASSWORD = re.compile(r"^([\w+.-]+://[^:/?#]*:)[^?#]*@")
_QUERY_PASSWORD = re.compile(r"([?&](?:sentinel_)?password=)[^&#]*")


def resolve_url(settings: Settings) -> str:
    """The configured Redis URL, or the embedded server's (started if need be) when none is set."""
    return settings.redis_url or ensure_server(settings.data_dir).url


def connect(url: str, *, decode_responses: bool = False) -> redis.Redis:
    """A client for redis://, rediss://, unix:// or redis+sentinel:// URLs that retries connection errors
    with backoff (through a failover, for a sentinel URL: see sentinel.py)."""
    options: dict[str, object] = {
        "decode_responses": decode_responses,
        "retry": Retry(ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), retries=RETRIES),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
        "driver_info": DRIVER_INFO,
    }
    if is_sentinel_url(url):
        return connect_sentinel(url, mask_password(url), {**options, "socket_keepalive": True})
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{mask_password(url)} is not a Redis URL: write redis://HOST:PORT/DB (rediss:// for TLS, "
                          "unix:///path/to.sock, redis+sentinel://HOST:26379/PRIMARY)")
    if scheme in ("redis", "rediss"):
        options["socket_keepalive"] = True  # TCP only: unix sockets reject the option
    return redis.Redis.from_url(url, **options)


def impatient_options(timeout: float) -> dict[str, object]:
    """Connection options that never retry and give up on a connect or a reply after `timeout` seconds."""
    return {"retry": Retry(NoBackoff(), 0), "socket_connect_timeout": timeout, "socket_timeout": timeout}


def impatient_client(client: redis.Redis, timeout: float) -> redis.Redis:
    """A client to the same server with impatient_options (close it after use)."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, **impatient_options(timeout)}
    return redis.Redis.from_pool(redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


def check_reachable(client: redis.Redis, url: str) -> None:
    """PING once, without retries (≤ ~5 s); raise RedisUnavailable with a plain reason if it fails."""
    probe = impatient_client(client, CHECK_TIMEOUT / 2)
    try:
        probe.ping()
    except (redis.RedisError, OSError) as exc:
        raise _unavailable(exc, url) from None
    finally:
        probe.close()


def _unavailable(exc: BaseException, url: str) -> RedisUnavailable:
    """Why the check failed; for a sentinel URL, what the sentinels say when they name no primary."""
    shown, reason = mask_password(url), reason_for(exc)
    if is_sentinel_url(url):
        found = diagnose(url, shown) if isinstance(exc, MasterNotFoundError) else None
        if found is not None:
            return RedisUnavailable(shown, found.reason, final=found.final)
        if reason == REFUSED:
            reason = "the primary the sentinels name refuses connections (a failover under way?)"
    return RedisUnavailable(shown, reason, final=reason == AUTH_FAILED)


def open_redis(settings: Settings) -> tuple[redis.Redis, str]:
    """Resolve the URL, connect and check the server answers; returns the client and the masked URL."""
    url = resolve_url(settings)
    client = connect(url)
    try:
        check_reachable(client, url)
    except RedisUnavailable:
        client.close()
        raise
    return client, mask_password(url)


def keep_trying(action: Callable[[], T], retry_on: type[BaseException] | tuple[type[BaseException], ...],
                reason: Callable[[BaseException], str | None], tick: Callable[[], None],
                pause: Callable[[float], object] = time.sleep) -> T:
    """Run `action` until it returns. While it raises `retry_on`, log `reason(exc)` (None: not worth waiting
    for, re-raised), call `tick` (the caller stays live for its health probe), wait (WAIT_FIRST, doubling up
    to WAIT_CAP) and try again."""
    delay = WAIT_FIRST
    while True:
        try:
            return action()
        except retry_on as exc:
            why = reason(exc)
            if why is None:
                raise
            log.warning("%s; next try in %.1f s", why, delay)
        tick()
        pause(delay)
        delay = min(delay * 2, WAIT_CAP)


def wait_for_redis(settings: Settings, tick: Callable[[], None],
                   stop: threading.Event) -> tuple[redis.Redis, str] | None:
    """open_redis for long-running processes: a Redis that is not there yet (compose or k8s starting it
    alongside) is asked again with backoff, calling `tick` between asks so the process stays live.
    A refused password or a primary the sentinels do not know is not waited for: asking again cannot fix
    it. None when `stop` is set meanwhile."""

    def waiting_for_it(exc: BaseException) -> str | None:
        return None if isinstance(exc, RedisUnavailable) and exc.final else f"{exc}; waiting for it"

    tick()
    return keep_trying(lambda: None if stop.is_set() else open_redis(settings), RedisUnavailable,
                       waiting_for_it, tick, stop.wait)


def mask_password(url: str) -> str:
    """The URL with any password (in the authority or a ?password= query) replaced by ***."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***@", url))


def reason_for(exc: BaseException) -> str:
    """Turn a redis-py/socket error into a short reason a user can act on."""
    cause = exc.__context__
    text = str(exc)
    if isinstance(exc, OutOfMemoryError):
        return "Redis refuses writes: it reached its maxmemory (free memory there or raise maxmemory)"
    if isinstance(exc, NoReplicasError):
        return ("Redis refuses writes: fewer replicas are in sync than its min-replicas-to-write (a replica down "
                "or lagging?)")
    if isinstance(exc, ReadOnlyError):
        return "Redis is a read-only replica now (failover?): waiting for a writable primary"
    if isinstance(exc, NoScriptError):
        return "Redis lost a script between loading it and running it (a failover under way?)"
    if isinstance(exc, MasterNotFoundError):
        return "the sentinels name no reachable primary (a failover under way?)"
    if isinstance(exc, AuthenticationError) or (
        isinstance(exc, ResponseError) and text.startswith(("NOAUTH", "WRONGPASS", "AUTH"))
    ):
        return AUTH_FAILED
    if isinstance(exc, RedisTimeoutError) or isinstance(cause, TimeoutError):
        return "timed out"
    if isinstance(cause, socket.gaierror) or "Name or service not known" in text:
        return "unknown host"
    if isinstance(cause, ConnectionRefusedError) or "Connection refused" in text:
        return REFUSED
    if isinstance(cause, FileNotFoundError):
        return "no such socket file — is the server running?"
    return text.splitlines()[0] if text else type(exc).__name__
