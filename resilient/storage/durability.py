"""Writes a failover must not lose (RESILIENT_DURABILITY=replica).

Replication is asynchronous: Redis acknowledges a write before any replica has it, and a failover promotes
a replica, so the last acknowledged writes can vanish. With durability on, a durable write is followed by
`WAIT 1 <timeout>` on the same connection (one pipeline), and it returns only once a replica has it:
Sentinel promotes the replica with the most of the primary's stream, so a write one replica acknowledged
survives the failover.

When no replica acknowledges within the timeout the write stands on the primary alone. It is then
confirmed again (waiting 0.5 s doubling to 10 s between tries, one log line each, as for an unreachable
Redis) until a replica has it: a small script checks that the write is still there (its `Mark`: fields of
one hash as the write left them) and writes one of them again, and WAIT covers that write, and so all
before it (a replica's acknowledgement covers the whole stream up to it). If the check finds the write
gone, a failover lost it: WriteLost, which the caller treats as Redis being away (the attempt ends without
blame and is retried from what survived).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import redis
from redis.commands.core import Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from .connection import keep_trying

if TYPE_CHECKING:
    from ..config import Settings

MEANWHILE_EVERY = 1.0  # seconds: while a write waits for a replica, its lease is renewed as often as a worker does
Mark = tuple[str, dict[str, Any]]  # a hash, and field values that show the write is (still) there

# ARGV: field, value pairs. Rewriting the first field, unchanged, is a write: it is replicated, so the WAIT
# that follows covers it and everything before it.
CONFIRM = """
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class NotReplicated(RedisConnectionError):
    """No replica acknowledged a durable write within the timeout (it is confirmed again)."""


class WriteLost(RedisConnectionError):
    """A durable write no replica had acknowledged is gone: a failover lost it. Like Redis being away, it is
    no one's fault; the caller resumes from what the new primary holds."""


@dataclass(frozen=True)
class Durability:
    replicas: int = 0  # replicas that must have a durable write; 0: off
    timeout_ms: int = 1000

    @classmethod
    def of(cls, settings: Settings) -> Durability:
        return cls(1 if settings.durability == "replica" else 0, int(settings.durability_timeout * 1000))


class DurableWriter:
    """Runs the scripts of durable writes; `tick` is called while it waits (a worker stays live)."""

    def __init__(self, connection: redis.Redis, durability: Durability) -> None:
        self.r = connection
        self.durability = durability
        self.tick: Callable[[], None] = lambda: None
        self._confirm = connection.register_script(CONFIRM)

    def write(self, script: Script, keys: Sequence[str | bytes], args: list[Any], what: str,
              mark: Callable[[Any], Mark | None], meanwhile: Callable[[Any], object] | None = None) -> Any:
        """Run `script`; with durability on, return once a replica has what it wrote. `mark(reply)` says how to
        see the write is still there (None: it wrote nothing); `meanwhile(reply)` runs before each confirmation
        (to keep a lease the write took from running out). WriteLost when a failover lost it meanwhile."""
        if not self.durability.replicas:
            return script(keys=keys, args=args)
        reply, acked = self._with_wait(lambda pipe: script(keys=keys, args=args, client=pipe))
        written = mark(reply)
        if acked >= self.durability.replicas or written is None:
            return reply

        def confirm(marked: Mark) -> None:
            if meanwhile is not None:
                meanwhile(reply)
            self._confirm_once(marked, what)

        def pause(seconds: float) -> None:  # the waits between tries grow to 10 s: past a lease
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                time.sleep(min(left, MEANWHILE_EVERY))
                if meanwhile is not None:
                    meanwhile(reply)

        keep_trying(lambda: confirm(written), NotReplicated,
                    lambda exc: f"{exc}: the write stands on the primary alone; waiting for a replica", self.tick,
                    pause)
        return reply

    def _confirm_once(self, written: Mark, what: str) -> None:
        key, fields = written
        args = [item for pair in fields.items() for item in pair]
        there, acked = self._with_wait(lambda pipe: self._confirm(keys=[key], args=args, client=pipe))
        if not int(there):
            raise WriteLost(f"{what} was lost in a failover before any replica had it")
        if acked < self.durability.replicas:
            raise NotReplicated(f"no replica acknowledged {what} within {self.durability.timeout_ms} ms "
                                "(RESILIENT_DURABILITY=replica)")

    def _with_wait(self, call: Callable[[Any], object]) -> tuple[Any, int]:
        """The script and WAIT in one pipeline: WAIT counts the replicas that have this connection's writes."""
        for tries_left in (1, 0):
            try:
                with self.r.pipeline(transaction=False) as pipe:
                    call(pipe)
                    pipe.wait(self.durability.replicas, self.durability.timeout_ms)
                    reply, acked = pipe.execute()
                return reply, int(acked)
            except NoScriptError:  # a new primary that has not seen the script: the next pipeline loads it
                if not tries_left:
                    raise
        raise AssertionError("unreachable")
