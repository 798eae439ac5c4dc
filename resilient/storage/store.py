"""Job state, checkpoints and their fencing, in Redis. Every write for an attempt checks its epoch."""

from __future__ import annotations

import functools
import re
import time
from typing import Any, Iterable, Sequence, cast

import msgpack
import redis
from redis.commands.core import Script
from redis.typing import EncodableT, KeyT

from ..config import Settings
from ..errors import CorruptCheckpoint, StaleAttempt
from ..model import Attempt, Cause, Checkpoint, Claim, Death, DeathCount, JobOptions, JobStatus
from . import keys
from .codec import decode, decode_fields, encode
from .durability import Durability, DurableWriter, Mark
from .scripts import (
    BEGIN,
    CANCEL,
    CLAIM,
    DEATH,
    ENQUEUE,
    FIELDS,
    FINISH,
    ONCE,
    PROMOTE,
    REFUSE,
    RELEASE,
    RENEW,
    REQUEUE,
    RESCUE,
    SAVE,
    SET_FIELDS,
    STALE,
    TURN_AWAY,
)

_BINARY_FIELDS = {b"result", b"last_death", b"call"}  # msgpack, not text
BEGUN = ("OK", "EXHAUSTED")  # BEGIN's verdicts that hand out an epoch
# A stream's entries as our clients (decode_responses=False) return them; redis-py types them more broadly.
StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]


def now_ms() -> int:
    return int(time.time() * 1000)


class DirectScript(Script):
    """A script called as one EVALSHA command: redis-py's Script call took ~8 µs more than the command itself,
    a tenth of a 1 KiB checkpoint save. On a pipeline, or where the server lost its scripts (a restart), it is
    redis-py's Script, which loads it."""

    def __call__(self, keys: Sequence[KeyT] | None = None, args: Iterable[EncodableT] | None = None,
                 client: Any = None) -> Any:
        if client is not None:
            return super().__call__(keys, args, client)
        keys, args = keys or (), tuple(args or ())  # a tuple: the fallback below sends the arguments again
        try:
            return self.registered_client.execute_command(  # type: ignore[no-untyped-call]  # untyped in redis-py
                "EVALSHA", self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return super().__call__(keys, args)


class Store:
    """Operations on resilient's keys for one Redis connection (bytes responses)."""

    def __init__(self, connection: redis.Redis, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        self.r = connection
        self.durable = DurableWriter(connection, Durability.of(settings))  # BEGIN, CLAIM, FINISH, asked saves
        self.lease_ms = int(settings.lease_ttl * 1000)
        self.checkpoint_history = settings.checkpoint_history
        self.event_history = settings.event_history
        self.keep, self.keep_failed = settings.keep, settings.keep_failed
        self._enqueue = connection.register_script(ENQUEUE)
        self._begin = connection.register_script(BEGIN)
        self._save = DirectScript(connection, SAVE)
        self._set_fields = connection.register_script(SET_FIELDS)
        self._once = connection.register_script(ONCE)
        self._finish = connection.register_script(FINISH)
        self._death = connection.register_script(DEATH)
        self._requeue = connection.register_script(REQUEUE)
        self._release = connection.register_script(RELEASE)
        self._renew = connection.register_script(RENEW)
        self._claim = connection.register_script(CLAIM)
        self._promote = connection.register_script(PROMOTE)
        self._rescue = connection.register_script(RESCUE)
        self._refuse = connection.register_script(REFUSE)
        self._turn_away = connection.register_script(TURN_AWAY)
        self._fields = connection.register_script(FIELDS)
        self._cancel = connection.register_script(CANCEL)

    # --- enqueue side -------------------------------------------------------------------------
    def create_job(self, job_id: str, name: str, queue: str, max_attempts: int, max_stuck: int = 3,
                   call: bytes | None = None, max_mem_stuck: int = 2, on_oom_queue: str | None = None,
                   keep: int | None = None, rq_fields: dict[str, Any] | None = None, pipeline: Any = None) -> bool:
        """Our record of a new job and, with `rq_fields` (RQ's record as RQ's enqueue would save it), RQ's
        record and its queue entry, in one step (Lua ENQUEUE); False when the id is already used. `call`
        (msgpack {args, kwargs, timeout}) is kept so that RQ's record can be rebuilt once it expired; the retry
        rules are kept so that a reaper judges a lost attempt by the job's own rules. With `pipeline`, the
        step is queued there and its reply (1, or 0 for a used id) comes with the pipeline's."""
        at = now_ms()
        fields: dict[str, Any] = {
            "name": name, "queue": queue, "status": JobStatus.QUEUED.value, "epoch": 0, "attempt": 0, "seq": 0,
            "max_attempts": max_attempts, "max_stuck": max_stuck, "max_mem_stuck": max_mem_stuck,
            "enqueued_at": at, "deaths": 0}
        if on_oom_queue:
            fields["on_oom_queue"] = on_oom_queue
        if keep:
            fields["keep"] = keep
        if call is not None:
            fields["call"] = call
        event = encode({"type": "enqueued", "at": str(at), "queue": queue})
        # Each record goes as one msgpack array of names and values: 70 separate arguments per job cost
        # redis-py more to pack than the rest of an enqueue.
        args: list[Any] = [job_id, at, event, _packed_hash(fields), _packed_hash(rq_fields) if rq_fields else b""]
        reply = self._enqueue(keys=[keys.job(job_id), keys.events(job_id), keys.rq_job(job_id), keys.rq_queue(queue)],
                              args=args, client=pipeline if pipeline is not None else self.r)
        return pipeline is not None or bool(reply)

    # --- attempt lifecycle --------------------------------------------------------------------
    def begin_attempt(self, job_id: str, worker: str, host: str, **facts: Any) -> tuple[str, Attempt | str]:
        """Start an attempt holding a lease, recording `facts` (e.g. its memory limit) in the job hash:
        ('OK', Attempt), ('EXHAUSTED', Attempt), ('DONE', status) or ('MISSING', '')."""
        args: list[Any] = [worker, host, now_ms(), self.event_history, self.lease_ms, job_id]
        for name, value in facts.items():
            args += [name, value]
        reply = self.durable.write(self._begin,
                                   [keys.job(job_id), keys.events(job_id), keys.LEASES, keys.checkpoint(job_id)], args,
                                   f"the start of job {job_id}",
                                   lambda r: _epoch_mark(job_id, r[1]) if _text(r[0]) in BEGUN else None,
                                   lambda r: self._keep_lease(job_id, r[1]))
        verdict = _text(reply[0])
        if verdict == "MISSING":
            return verdict, ""
        if verdict == "DONE":
            return verdict, _text(reply[1])
        last_death = self._decode_record(reply[3], job_id) if len(reply) > 3 and reply[3] else None
        checkpoint = _checkpoint(reply[4:7]) if len(reply) > 6 else None
        return verdict, Attempt(job_id, int(reply[1]), int(reply[2]), last_death, checkpoint)

    def load_checkpoint(self, job_id: str) -> Checkpoint | None:
        return _checkpoint(self.r.hmget(keys.checkpoint(job_id), "seq", "data", "saved_at"))

    def save_checkpoint(self, attempt: Attempt, data: bytes, done: int | None = None,
                        total: int | None = None, durable: bool = False) -> int:
        """Persist a checkpoint under the attempt's epoch; the new seq. `durable`: as BEGIN and FINISH are
        (RESILIENT_DURABILITY)."""
        job_id = attempt.job_id
        # bytes throughout: redis-py packs them as they are, and a save is the call jobs make most
        script_keys = _checkpoint_keys(job_id)
        args: list[Any] = [b"%d" % attempt.epoch, data, b"%d" % now_ms(), b"" if done is None else b"%d" % done,
                           b"" if total is None else b"%d" % total, self.checkpoint_history]
        if not durable:
            return int(_fenced(self._save(keys=script_keys, args=args), attempt))
        reply = self.durable.write(
            self._save, script_keys, args, f"checkpoint of job {job_id}",
            lambda r: None if _text(r) == STALE else (keys.checkpoint(job_id), {"epoch": attempt.epoch, "seq": r}))
        return int(_fenced(reply, attempt))

    def set_fields(self, attempt: Attempt, pipeline: Any = None, **fields: Any) -> None:
        """Fenced HSET of plain fields (progress, horse pid). With `pipeline`, queued there, its reply unread
        (a refused write changes nothing; the attempt learns it is stale at its next write)."""
        args: list[Any] = [attempt.epoch]
        for name, value in fields.items():
            args += [name, value]
        if pipeline is not None:
            # the script's text, not a Script: redis-py runs SCRIPT EXISTS, a round trip of its own, before
            # any pipeline that holds a Script (the server caches the compiled text by its digest)
            pipeline.eval(SET_FIELDS, 1, keys.job(attempt.job_id), *args)
            return
        _fenced(self._set_fields(keys=[keys.job(attempt.job_id)], args=args), attempt)

    def once_result(self, job_id: str, key: str) -> bytes | None:
        """What ctx.once(key, ...) recorded for the job, or None when it has not run to its end yet."""
        return cast(bytes | None, self.r.hget(keys.once(job_id), key))

    def record_once(self, attempt: Attempt, key: str, data: bytes) -> None:
        """Record the result of ctx.once(key, ...) under the attempt's epoch (the first record wins); durable
        as BEGIN and FINISH are (RESILIENT_DURABILITY): a record lost in a failover would repeat the effect."""
        once_key = keys.once(attempt.job_id)
        reply = self.durable.write(
            self._once, [keys.job(attempt.job_id), once_key], [attempt.epoch, key, data],
            f"ctx.once record {key!r} of job {attempt.job_id}",
            lambda r: (once_key, {key: data}) if _text(r) == "1" else None)
        _fenced(reply, attempt)

    def complete(self, attempt: Attempt, result: bytes, peak_rss: int = 0, **progress: int) -> None:
        """`progress`: done and total as they stood at the end (those written during the run lag behind)."""
        self._finish_attempt(attempt, JobStatus.COMPLETED, "completed", peak_rss, result=result, **progress)

    def fail(self, attempt: Attempt, error: str) -> None:
        self._finish_attempt(attempt, JobStatus.FAILED, "failed", error=error)

    def park(self, attempt: Attempt, reason: str) -> None:
        self._finish_attempt(attempt, JobStatus.PARKED, "parked", parked_reason=reason)

    def _finish_attempt(self, attempt: Attempt, status: str, event: str, peak_rss: int = 0, **fields: Any) -> None:
        job_id = attempt.job_id
        args: list[Any] = [attempt.epoch, status, now_ms(), event, self.event_history, job_id, peak_rss, self.keep,
                           self.keep_failed]
        for name, value in fields.items():
            args += [name, value]
        reply = self.durable.write(
            self._finish, [keys.job(job_id), keys.events(job_id), keys.PARKED, keys.LEASES], args,
            f"the end ({event}) of job {job_id}",
            lambda r: None if _text(r) == STALE else (keys.job(job_id), {"epoch": attempt.epoch, "status": status}))
        _fenced(reply, attempt)

    def record_death(self, attempt: Attempt, death: Death) -> DeathCount:
        """Append a death to the timeline and count it (DeathCount.attempt: the attempts that count)."""
        job_id = attempt.job_id
        reply = self._death(
            keys=[keys.job(job_id), keys.events(job_id)],
            args=[attempt.epoch, death.cause, encode(death.evidence), now_ms(), int(death.counts_toward_cap),
                  int(death.is_memory), self.event_history, int(death.evidence.get("ru_maxrss") or 0), job_id,
                  int(death.counts_as_attempt)],
        )
        _fenced(reply, attempt)
        return DeathCount(int(reply[1]), int(reply[2]), int(reply[3]), int(reply[4]))

    def mark_requeued(self, attempt: Attempt, reason: str, queue: str, rerouted: bool = False,
                      delay: float = 0.0) -> None:
        """The attempt's job goes back to the front of `queue` (after `delay` seconds) in one step; a
        reroute (on_oom_queue) starts its memory count anew."""
        reply = self._requeue(keys=[keys.job(attempt.job_id), keys.events(attempt.job_id), keys.LEASES],
                              args=[attempt.epoch, now_ms(), reason, queue, self.event_history, int(rerouted),
                                    attempt.job_id, int(delay * 1000)])
        _fenced(reply, attempt)

    def promote_due(self, at_ms: int | None = None) -> int:
        """Move delayed retries whose time has come (by the server's clock, or `at_ms` in it) into their
        queues; how many were due."""
        return int(self._promote(args=["" if at_ms is None else at_ms, self.keep_failed * 1000]))

    def rescue_stranded(self, job_id: str, queue: str, taken: bool = False) -> bool:
        """`taken`: this caller took the job off its queue and did not start it (put back even when RQ's
        intermediate list does not hold it)."""
        return bool(self._rescue(args=[job_id, queue, int(taken)]))

    def turn_away(self, job_id: str, from_queue: str, reason: str, to_queue: str | None) -> bool:
        """A job that cannot fit under this worker's limit, before any attempt: to the front of `to_queue`,
        or parked with `reason` when there is none. False when the job is no longer waiting to run."""
        reply = self._turn_away(keys=[keys.events(job_id)],
                                args=[job_id, from_queue, to_queue or "", reason, now_ms(), self.event_history,
                                      self.keep_failed])
        return bool(reply)

    def refuse(self, job_id: str, reason: str, rq_keys: list[str], rq_ttl: int) -> str:
        """Drop a refused queue entry; fail its job (ours and RQ's record) if it was waiting to run.
        'REFUSED', or the status of a job another attempt owns (left as it is)."""
        at = now_ms()
        reply = self._refuse(keys=[keys.job(job_id), keys.events(job_id), *rq_keys],
                             args=[job_id, reason, at, self.event_history, at // 1000 + rq_ttl, rq_ttl,
                                   self.keep_failed])
        return _text(reply)

    def renew_lease(self, attempt: Attempt) -> int:
        """Push the attempt's lease deadline to now + lease_ttl; returns when the attempt last made a
        checkpoint (epoch ms, its start if none yet)."""
        reply = self._renew(keys=[keys.job(attempt.job_id), keys.LEASES],
                            args=[attempt.epoch, self.lease_ms, attempt.job_id])
        return int(_fenced(reply, attempt))

    def _keep_lease(self, job_id: str, epoch: Any) -> None:
        """While a durable BEGIN or CLAIM waits for a replica, the lease it took must not run out: a reaper
        would take the job over meanwhile. (STALE: the write is gone, which the confirmation reports.)"""
        self._renew(keys=[keys.job(job_id), keys.LEASES], args=[epoch, self.lease_ms, job_id])

    def add_memory_sample(self, attempt: Attempt, rss: int, level: str, cap: int) -> None:
        """One point of the attempt's memory history (its own capped stream). It expires like a failed job's
        keys however the job ends (FINISH sets the job's own retention; a sample after it sets this again)."""
        key = keys.memory(attempt.job_id, attempt.attempt)
        with self.r.pipeline(transaction=False) as pipe:
            pipe.xadd(key, {"at": now_ms(), "rss": rss, "level": level}, maxlen=cap, approximate=True)
            pipe.expire(key, self.keep_failed)
            pipe.execute()

    def memory_samples(self, job_id: str, attempt: int) -> list[dict[str, Any]]:
        """An attempt's memory history, oldest first: {at, rss, level}."""
        entries = cast(StreamEntries, self.r.xrange(keys.memory(job_id, attempt)))
        return [{"at": int(fields[b"at"]), "rss": int(fields[b"rss"]), "level": fields[b"level"].decode()}
                for _, fields in entries]

    def server_ms(self) -> int:
        """The Redis server's clock: the one lease deadlines are written in."""
        seconds, micros = self.r.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def expired_leases(self, at_ms: int, limit: int = 100) -> list[str]:
        """Job ids whose lease deadline has passed (cost grows with what expired, not with all jobs)."""
        return [_text(m) for m in self.r.zrangebyscore(keys.LEASES, "-inf", at_ms, start=0, num=limit)]

    def claim_lost(self, job_id: str, at_ms: int) -> Claim | None:
        """Take over an expired attempt (one caller wins) and record its `lost` death; the caller settles
        the job (attempt.settle). None when the lease is not expired, or gone."""
        reply = self.durable.write(self._claim, [keys.job(job_id), keys.events(job_id), keys.LEASES],
                                   [job_id, at_ms, self.event_history, self.lease_ms], f"the claim of job {job_id}",
                                   lambda r: _epoch_mark(job_id, r[0]) if r else None,
                                   lambda r: self._keep_lease(job_id, r[0]))
        if not reply:
            return None
        epoch, stuck, mem_stuck, seq, attempt, evidence, queue, max_attempts, max_stuck, max_mem, oom_queue = reply
        rules = JobOptions(queue=_text(queue), max_attempts=int(max_attempts), max_deaths_without_progress=int(max_stuck),
                           max_memory_deaths_at_same_checkpoint=int(max_mem), on_oom_queue=_text(oom_queue) or None)
        return Claim(Attempt(job_id, int(epoch), int(attempt), None),
                     Death(Cause.LOST, self._decode_record(evidence, job_id)),
                     DeathCount(int(stuck), int(mem_stuck), int(seq), int(attempt)), _text(queue), rules)

    def drop_checkpoint(self, job_id: str) -> None:
        self.r.delete(keys.checkpoint(job_id))

    def release(self, job_id: str, more_attempts: int, restart: bool = False) -> str:
        """Operator requeue of a parked/failed job, back at the front of its queue in one step: 'OK',
        NO_RQ_RECORD, or the status that prevents it. `restart` drops the checkpoint too."""
        reply = self._release(keys=[keys.job(job_id), keys.events(job_id), keys.PARKED, keys.checkpoint(job_id)],
                              args=[now_ms(), more_attempts, job_id, self.event_history, int(restart)])
        return _text(reply)

    def cancel_parked(self, job_id: str, reason: str) -> str:
        """Give up on a parked job (Lua CANCEL): 'OK', or the status that prevents it ('MISSING': no such job)."""
        return _text(self._cancel(keys=[keys.job(job_id), keys.events(job_id), keys.PARKED],
                                  args=[job_id, reason, now_ms(), self.event_history]))

    # --- reading ------------------------------------------------------------------------------
    def peaks(self, job_id: str, function: str) -> tuple[int, list[int]]:
        """The job's own highest horse RSS (0: none yet) and its function's recent peaks, newest first."""
        with self.r.pipeline(transaction=False) as pipe:
            pipe.hget(keys.job(job_id), "peak_rss")
            pipe.lrange(keys.peaks(function), 0, -1)
            own, recent = pipe.execute()
        return int(own or 0), [int(value) for value in recent]

    def job_fields(self, job_id: str) -> dict[str, str]:
        raw = self.r.hgetall(keys.job(job_id))
        return {_text(k): _text(v) for k, v in raw.items() if k not in _BINARY_FIELDS}

    def jobs_fields(self, job_ids: list[str], names: tuple[str, ...], chunk: int = 1000) -> list[dict[str, str]]:
        """The named text fields of many jobs (absent fields left out; {} for a job gone): one round trip, one
        FIELDS call per `chunk` jobs, each holding the server for a few ms."""
        with self.r.pipeline(transaction=False) as pipe:
            for start in range(0, len(job_ids), chunk):
                self._fields(args=[len(names), *names, *job_ids[start:start + chunk]], client=pipe)
            packed = cast(list[bytes], pipe.execute())
        rows = [row for blob in packed for row in msgpack.unpackb(blob, raw=True)]
        return [{name: _text(value) for name, value in zip(names, row) if value is not False} for row in rows]

    def job_call(self, job_id: str) -> dict[str, Any] | None:
        """The arguments and timeout the job was enqueued with; None for jobs enqueued before they were kept."""
        raw = cast(bytes | None, self.r.hget(keys.job(job_id), "call"))
        return self._decode_record(raw, job_id) if raw else None

    def job_ids_starting_with(self, prefix: str, limit: int = 2) -> list[str]:
        """Up to `limit` known job ids that start with `prefix` (a scan of the jobs index: for people typing
        an id shortened by `top`, not for code)."""
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        found: list[str] = []
        for member, _ in self.r.zscan_iter(keys.JOBS, match=pattern, count=1000):
            found.append(_text(member))
            if len(found) >= limit:
                break
        return found

    def result_bytes(self, job_id: str) -> bytes | None:
        return cast(bytes | None, self.r.hget(keys.job(job_id), "result"))

    def last_death(self, job_id: str) -> dict[str, Any] | None:
        raw = cast(bytes | None, self.r.hget(keys.job(job_id), "last_death"))
        return self._decode_record(raw, job_id) if raw else None

    def events(self, job_id: str, count: int | None = None) -> list[dict[str, Any]]:
        """The timeline, oldest first; evidence decoded (a corrupt one is reported in place)."""
        entries = cast(list[bytes], self.r.lrange(keys.events(job_id), 0, -1 if count is None else count - 1))
        return [self._event(entry, job_id) for entry in entries]

    def _event(self, entry: bytes, job_id: str) -> dict[str, Any]:
        try:
            fields = decode_fields(entry, key=keys.events(job_id))
        except CorruptCheckpoint as exc:
            return {"type": "corrupt", "error": str(exc)}
        event: dict[str, Any] = {_text(k): _text(v) for k, v in fields.items() if k != b"evidence"}
        if b"evidence" in fields:
            event["evidence"] = self._decode_record(fields[b"evidence"], job_id)
        return event

    def checkpoint_history_entries(self, job_id: str) -> list[dict[str, int]]:
        entries = cast(list[bytes], self.r.lrange(keys.checkpoint_history(job_id), 0, -1))
        return [self._history_entry(entry, job_id) for entry in entries]

    def _history_entry(self, entry: bytes, job_id: str) -> dict[str, int]:
        record = self._decode_record(entry, job_id)
        return {name: int(record.get(name, -1)) for name in ("seq", "epoch", "saved_at", "bytes")}

    def recent_deaths(self, count: int = 10) -> list[dict[str, str]]:
        """The last deaths across all jobs, newest first."""
        return [{_text(k): _text(v) for k, v in fields.items()}
                for _, fields in cast(StreamEntries, self.r.xrevrange(keys.DEATHS, count=count))]

    def parked_count(self) -> int:
        return int(self.r.zcard(keys.PARKED))

    def retained_jobs(self, sample: int) -> tuple[int, list[int]]:
        """How many jobs the index holds, and the bytes of our keys for up to `sample` of them at random."""
        with self.r.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.JOBS)
            pipe.zrandmember(keys.JOBS, sample)
            count, picked = pipe.execute()
        with self.r.pipeline(transaction=False) as pipe:
            for job_id in (_text(member) for member in picked or []):
                for key in (keys.job(job_id), keys.events(job_id), keys.checkpoint(job_id),
                            keys.checkpoint_history(job_id)):
                    pipe.memory_usage(key, samples=0)
            sizes = pipe.execute()
        per_job = [sum(int(size or 0) for size in sizes[i:i + 4]) for i in range(0, len(sizes), 4)]
        return int(count), per_job

    def parked(self) -> list[tuple[str, int]]:
        parked = cast(list[tuple[bytes, float]], self.r.zrange(keys.PARKED, 0, -1, withscores=True))
        return [(_text(m), int(s)) for m, s in parked]

    def _decode_record(self, raw: bytes, job_id: str) -> dict[str, Any]:
        try:
            value = decode(raw, key=keys.job(job_id))
        except CorruptCheckpoint as exc:
            return {"corrupt": str(exc)}
        return value if isinstance(value, dict) else {"corrupt": f"expected a map, found {type(value).__name__}"}


def _packed_hash(fields: dict[str, Any]) -> bytes:
    """HSET's arguments as one msgpack array, each value as redis-py would send it (numbers as their text).
    Raw strings only (no bin type): the cmsgpack of Redis's Lua cannot read bin."""
    items = [item if isinstance(item, (str, bytes)) else repr(item) for item in _flat(fields)]
    return cast(bytes, msgpack.packb(items, use_bin_type=False))


def _flat(fields: dict[str, Any]) -> list[Any]:
    return [item for pair in fields.items() for item in pair]


@functools.lru_cache(maxsize=64)
def _checkpoint_keys(job_id: str) -> tuple[bytes, ...]:
    """The keys a save writes, encoded once per job (a long job saves thousands of times)."""
    return tuple(name(job_id).encode() for name in (keys.job, keys.checkpoint, keys.checkpoint_history))


def _fenced(reply: Any, attempt: Attempt) -> Any:
    """A fenced script's reply, or StaleAttempt when the fence refused the write: the job has a newer
    attempt, or is already in a final status. (Every fenced write reports staleness this one way.)"""
    if _text(reply) == STALE:
        raise StaleAttempt(f"attempt {attempt.attempt} (epoch {attempt.epoch}) of job {attempt.job_id} is "
                           "superseded or the job has ended; nothing written")
    return reply


def _epoch_mark(job_id: str, epoch: Any) -> Mark:
    """What shows that BEGIN or CLAIM wrote: the job hash holds the epoch it handed out."""
    return keys.job(job_id), {"epoch": epoch}


def _checkpoint(values: list[Any]) -> Checkpoint | None:
    seq, data, saved_at = values
    if seq is None or data is None:
        return None
    return Checkpoint(int(seq), data, int(saved_at or 0))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
