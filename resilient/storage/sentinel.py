"""Redis Sentinel: the redis+sentinel:// URL, a client that finds the primary through the sentinels (and
finds it again after a failover), and why the sentinels could not name one, in plain words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote

import redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..errors import ConfigError

SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
DEFAULT_PORT = 26379
FORM = "redis+sentinel://[:password@]host1:26379,host2:26379/SERVICE[/DB]"
# One sentinel that does not answer must not hold up the next: each is asked once, briefly; the data
# connection around it retries with backoff.
SENTINEL_TIMEOUT = 2.0
_QUERY = {"sentinel_password"}


@dataclass(frozen=True)
class SentinelURL:
    """Where the sentinels are, which primary (service) to ask them for, and how to log in to each."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None  # the data nodes' (primary and replicas)
    sentinel_password: str | None = None  # the sentinels' own, when they require one
    tls: bool = False


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


def parse_sentinel_url(url: str, shown: str) -> SentinelURL:
    """Read a redis+sentinel:// (or rediss+sentinel://) URL; ConfigError naming the fault and the form.
    `shown`: the URL as it may be printed (password masked)."""
    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")  # rpartition: a raw "@" may be part of the password
    username, _, password = userinfo.partition(":") if at else ("", "", "")
    sentinels = tuple(_host_port(part, shown) for part in hosts.split(",") if part.strip())
    if not sentinels:
        raise _bad(shown, "no sentinel host")
    segments = [unquote(s) for s in path.rstrip("/").split("/")] if path.strip("/") else []
    if not segments or not segments[0]:
        raise _bad(shown, "no primary name: add the name the sentinels monitor (`sentinel monitor NAME ...`)")
    if len(segments) > 2:
        raise _bad(shown, f"more than SERVICE/DB in the path ({path!r})")
    db = _number(segments[1], "the database", shown) if len(segments) == 2 else 0
    return SentinelURL(sentinels, segments[0], db, unquote(username) or None, unquote(password) or None,
                       _query(query, shown).get("sentinel_password"), SCHEMES[scheme.lower()])


def connect_sentinel(url: str, shown: str, options: dict[str, Any]) -> redis.Redis:
    """A client of the primary the sentinels name: on a failover its connections fail, are retried (with
    `options`' retry), and reconnect to whichever primary the sentinels name then."""
    target = parse_sentinel_url(url, shown)
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options(target))  # type: ignore[no-untyped-call]
    client = sentinel.master_for(target.service, db=target.db, username=target.username,  # type: ignore[no-untyped-call]
                                 password=target.password, ssl=target.tls, **options)
    return cast(redis.Redis, client)


def sentinel_options(target: SentinelURL) -> dict[str, Any]:
    """How each sentinel is asked: once, briefly (the caller goes on to the next one)."""
    return {"socket_connect_timeout": SENTINEL_TIMEOUT, "socket_timeout": SENTINEL_TIMEOUT,
            "retry": Retry(NoBackoff(), 0), "password": target.sentinel_password, "ssl": target.tls}


@dataclass(frozen=True)
class Diagnosis:
    reason: str
    final: bool  # asking again cannot fix it: the URL is wrong


def diagnose(url: str, shown: str) -> Diagnosis | None:
    """Ask each sentinel what it knows of the service: why no primary could be had, or None when they
    name a primary that looks healthy (then reaching it is what failed)."""
    target = parse_sentinel_url(url, shown)
    answers: list[dict[str, Any]] = []
    failures: list[str] = []
    for host, port in target.sentinels:
        with redis.Redis(host, port, **sentinel_options(target)) as sentinel:
            try:
                answers.append(sentinel.sentinel_masters())
            except AuthenticationError:
                return Diagnosis(f"sentinel {host}:{port} refused the sentinel password: set or fix "
                                 "?sentinel_password= in the URL", True)
            except (redis.RedisError, OSError) as exc:
                failures.append(f"{host}:{port} {_short(exc)}")
    if not answers:
        return Diagnosis(f"no sentinel answers ({'; '.join(failures)}): check the sentinel hosts and ports in the "
                         "URL, or start the sentinels", False)
    states = [masters[target.service] for masters in answers if target.service in masters]
    if not states:
        names = sorted({name for masters in answers for name in masters})
        return Diagnosis(f"the sentinels monitor no primary named {target.service!r} (they monitor: "
                         f"{', '.join(names) or 'none'}): fix the name in the URL", True)
    if not any(state["is_master"] and not state["is_sdown"] and not state["is_odown"] for state in states):
        return Diagnosis(f"the sentinels see primary {target.service!r} down (a failover under way?)", False)
    return None


def _host_port(part: str, shown: str) -> tuple[str, int]:
    part = part.strip()
    if part.startswith("["):  # [IPv6]:port
        host, _, tail = part[1:].partition("]")
        port = tail.removeprefix(":")
    else:
        host, _, port = part.partition(":")
    if not host:
        raise _bad(shown, f"a sentinel without a host ({part!r})")
    return host, _number(port, f"the port of sentinel {host}", shown) if port else DEFAULT_PORT


def _number(text: str, what: str, shown: str) -> int:
    if not text.isdigit():
        raise _bad(shown, f"{what} is {text!r}, not a number")
    return int(text)


def _query(query: str, shown: str) -> dict[str, str]:
    values = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(values) - _QUERY)
    if unknown:
        raise _bad(shown, f"unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(_QUERY))})")
    return {name: items[-1] for name, items in values.items()}


def _bad(shown: str, problem: str) -> ConfigError:
    return ConfigError(f"Redis URL {shown}: {problem}; the form is {FORM}")


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return "connection refused" if "Connection refused" in text or "ECONNREFUSED" in text else text
