"""Job state, checkpoints and their fencing, in Redis. Every write for an attempt checks its epoch."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from . import keys
from .codec import decode, encode
from .errors import CorruptCheckpoint

STALE = "STALE"

# Each script starts by comparing the attempt's epoch with the job's: a superseded attempt writes nothing.
_FENCE = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 'STALE' end
"""
# Lease deadlines use the server's clock, so hosts with skewed clocks agree on what has expired.
_SERVER_MS = """
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""
_PUSH_BACK = """
-- Back into RQ's queue (its key names are pinned with rq 3.x), at the front, or into our delayed set.
local function push_back(job_id, queue, delay_ms, now)
  if tonumber(delay_ms) > 0 then
    redis.call('ZADD', 'resilient:delayed', tonumber(now) + tonumber(delay_ms), job_id)
    return
  end
  redis.call('SADD', 'rq:queues', 'rq:queue:' .. queue)
  redis.call('HSET', 'rq:job:' .. job_id, 'status', 'queued', 'origin', queue)
  redis.call('LPUSH', 'rq:queue:' .. queue, job_id)
end
"""

_BEGIN = _SERVER_MS + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'MISSING'} end
if status == 'completed' or status == 'parked' or status == 'failed' then return {'DONE', status} end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
if attempt > tonumber(redis.call('HGET', KEYS[1], 'max_attempts')) then
  return {'EXHAUSTED', epoch, attempt}
end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'host', ARGV[2], 'started_at', ARGV[3])
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[3], server_ms() + tonumber(ARGV[5]), ARGV[6])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'type', 'started', 'at', ARGV[3],
  'attempt', attempt, 'epoch', epoch, 'worker', ARGV[1], 'host', ARGV[2])
return {'OK', epoch, attempt, redis.call('HGET', KEYS[1], 'last_death') or false}
"""

_SAVE = _FENCE + _SERVER_MS + """
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[2], 'epoch', ARGV[1], 'seq', seq, 'data', ARGV[2], 'saved_at', ARGV[3],
  'bytes', string.len(ARGV[2]))
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[6], '*', 'seq', seq, 'epoch', ARGV[1], 'saved_at', ARGV[3],
  'data', ARGV[2])
redis.call('HSET', KEYS[1], 'saved_at', ARGV[3])
redis.call('ZADD', KEYS[4], 'XX', server_ms() + tonumber(ARGV[7]), ARGV[8])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'done', ARGV[4], 'total', ARGV[5], 'ckpt_done', ARGV[4]) end
return seq
"""

_SET_FIELDS = _FENCE + """
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 'OK'
"""

# ARGV: epoch, new status, now, event type, events cap, job id, then field/value pairs for hash and event.
_FINISH = _FENCE + """
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[3])
local event = {'type', ARGV[4], 'at', ARGV[3], 'epoch', ARGV[1]}
for i = 7, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  if ARGV[i] ~= 'result' then table.insert(event, ARGV[i]); table.insert(event, ARGV[i + 1]) end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(event))
if ARGV[2] == 'parked' then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[6]) end
redis.call('ZREM', KEYS[4], ARGV[6])
return 'OK'
"""

# ARGV: epoch, cause, evidence (msgpack), now, counts toward the poison cap (0/1), is a memory death (0/1),
# events cap, peak rss
_DEATH = _FENCE + """
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local function bump(counter, at_seq)
  local last = tonumber(redis.call('HGET', KEYS[1], at_seq) or '-1')
  redis.call('HSET', KEYS[1], at_seq, seq)
  if seq ~= last then redis.call('HSET', KEYS[1], counter, 1); return 1 end
  return redis.call('HINCRBY', KEYS[1], counter, 1)
end
local stuck = tonumber(redis.call('HGET', KEYS[1], 'stuck') or '0')
local mem_stuck = tonumber(redis.call('HGET', KEYS[1], 'mem_stuck') or '0')
if ARGV[5] == '1' then stuck = bump('stuck', 'stuck_seq') end
if ARGV[6] == '1' then mem_stuck = bump('mem_stuck', 'mem_seq') end
local peak = tonumber(redis.call('HGET', KEYS[1], 'peak_rss') or '0')
if tonumber(ARGV[8]) > peak then redis.call('HSET', KEYS[1], 'peak_rss', ARGV[8]) end
redis.call('HSET', KEYS[1], 'last_death', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'deaths', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'type', 'died', 'at', ARGV[4], 'epoch', ARGV[1],
  'cause', ARGV[2], 'seq', seq, 'evidence', ARGV[3])
redis.call('XADD', 'resilient:deaths', 'MAXLEN', '~', 200, '*', 'job_id', ARGV[9], 'cause', ARGV[2], 'at', ARGV[4])
return {'OK', stuck, mem_stuck, seq, tonumber(redis.call('HGET', KEYS[1], 'attempt'))}
"""

# ARGV: epoch, now, reason, queue, events cap, rerouted (0/1), job id, delay ms
_REQUEUE = _FENCE + _PUSH_BACK + """
redis.call('HSET', KEYS[1], 'status', 'queued', 'queue', ARGV[4])
redis.call('ZREM', KEYS[3], ARGV[7])
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'mem_stuck', 0); redis.call('HDEL', KEYS[1], 'mem_seq') end
push_back(ARGV[7], ARGV[4], ARGV[8], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'type', 'requeued', 'at', ARGV[2],
  'from_seq', redis.call('HGET', KEYS[1], 'seq') or '0', 'reason', ARGV[3], 'queue', ARGV[4],
  'delay_ms', ARGV[8])
return 'OK'
"""

# Delayed retries whose time has come go back to their queue; any caller may run it, each job moves once.
_PROMOTE = _PUSH_BACK + """
local due = redis.call('ZRANGEBYSCORE', 'resilient:delayed', '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, job_id in ipairs(due) do
  redis.call('ZREM', 'resilient:delayed', job_id)
  local queue = redis.call('HGET', 'resilient:job:' .. job_id, 'queue')
  if queue and redis.call('HGET', 'resilient:job:' .. job_id, 'status') == 'queued' then
    push_back(job_id, queue, 0, ARGV[1])
  end
end
return #due
"""

# A queue entry stranded in RQ's intermediate list (its worker died between taking it and starting it):
# back to the front of its queue, if it is still ours to move. ARGV: job id, queue.
_RESCUE = _PUSH_BACK + """
if redis.call('HGET', 'resilient:job:' .. ARGV[1], 'status') ~= 'queued' then return 0 end
if redis.call('ZSCORE', 'resilient:leases', ARGV[1]) or redis.call('ZSCORE', 'resilient:delayed', ARGV[1]) then
  return 0
end
if redis.call('LPOS', 'rq:queue:' .. ARGV[2], ARGV[1]) then  -- it is queued already: just drop the stray entry
  redis.call('LREM', 'rq:queue:' .. ARGV[2] .. ':intermediate', 0, ARGV[1])
  return 0
end
if redis.call('LREM', 'rq:queue:' .. ARGV[2] .. ':intermediate', 0, ARGV[1]) == 0 then return 0 end
push_back(ARGV[1], ARGV[2], 0, 0)
return 1
"""

# ARGV: epoch, ttl ms, job id. XX: a finished attempt's lease is gone and must stay gone.
_RENEW = _FENCE + _SERVER_MS + """
redis.call('ZADD', KEYS[2], 'XX', server_ms() + tonumber(ARGV[2]), ARGV[3])
return 'OK'
"""

# A lease past its deadline: the attempt is lost (worker or container gone, or paused). One caller wins:
# it bumps the epoch (fencing the old attempt out) and gets the job back as 'queued', or 'parked' when the
# job died too often without progress. ARGV: job id, now, events cap.
_CLAIM = _PUSH_BACK + """
local deadline = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not deadline or tonumber(deadline) > tonumber(ARGV[2]) then return false end
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return false end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local last = tonumber(redis.call('HGET', KEYS[1], 'stuck_seq') or '-1')
local stuck = 1
if seq == last then stuck = redis.call('HINCRBY', KEYS[1], 'stuck', 1) else redis.call('HSET', KEYS[1], 'stuck', 1) end
redis.call('HSET', KEYS[1], 'stuck_seq', seq)
local job = redis.call('HMGET', KEYS[1], 'worker', 'host', 'attempt', 'max_attempts', 'max_stuck', 'queue')
local evidence = cmsgpack.pack({cause = 'lost', worker = job[1], host = job[2], lease_deadline = tonumber(deadline),
  detected_at = tonumber(ARGV[2]), seq = seq})
redis.call('HSET', KEYS[1], 'last_death', evidence)
redis.call('HINCRBY', KEYS[1], 'deaths', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'type', 'died', 'at', ARGV[2], 'epoch', epoch - 1,
  'cause', 'lost', 'seq', seq, 'evidence', evidence)
redis.call('XADD', 'resilient:deaths', 'MAXLEN', '~', 200, '*', 'job_id', ARGV[1], 'cause', 'lost', 'at', ARGV[2])
local attempt, max_attempts, max_stuck = tonumber(job[3]), tonumber(job[4]), tonumber(job[5] or '3')
local reason = false
if stuck >= max_stuck then
  reason = 'lost ' .. stuck .. ' times at checkpoint ' .. seq .. ' without progress (its worker died each time: ' ..
    'look for the whole container being killed)'
elseif attempt >= max_attempts then
  reason = 'gave up after ' .. attempt .. ' attempts (max_attempts); last: lost'
end
if reason then
  redis.call('HSET', KEYS[1], 'status', 'parked', 'parked_reason', reason, 'finished_at', ARGV[2])
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'type', 'parked', 'at', ARGV[2], 'parked_reason', reason)
else
  redis.call('HSET', KEYS[1], 'status', 'queued')
  push_back(ARGV[1], job[6], 0, ARGV[2])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'type', 'requeued', 'at', ARGV[2], 'from_seq', seq,
    'reason', 'lost', 'queue', job[6], 'delay_ms', 0)
end
return {epoch, stuck, attempt, job[6], seq, reason}
"""

# An operator's requeue: new epoch (fences out anything still running), counters reset, more attempts.
_RELEASE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'MISSING' end
if status == 'completed' or status == 'queued' then return status end
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0')
redis.call('HSET', KEYS[1], 'status', 'queued', 'stuck', 0, 'mem_stuck', 0,
  'max_attempts', attempt + tonumber(ARGV[2]))
redis.call('HDEL', KEYS[1], 'parked_reason', 'error')
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'type', 'requeued', 'at', ARGV[1],
  'from_seq', redis.call('HGET', KEYS[1], 'seq') or '0', 'reason', 'operator')
return 'OK'
"""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Attempt:
    """One run of a job: the epoch fences every write it makes."""

    job_id: str
    epoch: int
    attempt: int
    last_death: dict[str, Any] | None


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    data: bytes
    saved_at_ms: int


@dataclass(frozen=True)
class DeathCount:
    stuck: int  # deaths since the checkpoint seq last advanced
    memory_stuck: int  # memory deaths at the same seq
    seq: int
    attempt: int


@dataclass(frozen=True)
class Claim:
    """A lost attempt taken over by a reaper: requeued under a new epoch, or parked (`parked_reason`)."""

    job_id: str
    epoch: int
    stuck: int
    attempt: int
    queue: str
    seq: int
    parked_reason: str


class Store:
    """Operations on resilient's keys for one Redis connection (bytes responses)."""

    def __init__(self, connection: redis.Redis, checkpoint_history: int = 10, event_history: int = 1000,
                 lease_ttl: float = 10.0) -> None:
        self.r = connection
        self.lease_ms = int(lease_ttl * 1000)
        self.checkpoint_history = checkpoint_history
        self.event_history = event_history
        self._begin = connection.register_script(_BEGIN)
        self._save = connection.register_script(_SAVE)
        self._set_fields = connection.register_script(_SET_FIELDS)
        self._finish = connection.register_script(_FINISH)
        self._death = connection.register_script(_DEATH)
        self._requeue = connection.register_script(_REQUEUE)
        self._release = connection.register_script(_RELEASE)
        self._renew = connection.register_script(_RENEW)
        self._claim = connection.register_script(_CLAIM)
        self._promote = connection.register_script(_PROMOTE)
        self._rescue = connection.register_script(_RESCUE)

    # --- enqueue side -------------------------------------------------------------------------
    def create_job(self, job_id: str, name: str, queue: str, max_attempts: int, max_stuck: int = 3,
                   pipeline: Any = None) -> None:
        at = now_ms()
        pipe = pipeline if pipeline is not None else self.r.pipeline()
        pipe.hset(
            keys.job(job_id),
            mapping={"name": name, "queue": queue, "status": "queued", "epoch": 0, "attempt": 0, "seq": 0,
                     "max_attempts": max_attempts, "max_stuck": max_stuck, "enqueued_at": at, "deaths": 0},
        )
        pipe.zadd(keys.JOBS, {job_id: at})
        pipe.xadd(keys.events(job_id), {"type": "enqueued", "at": at, "queue": queue},
                  maxlen=self.event_history, approximate=True)
        if pipeline is None:
            pipe.execute()

    # --- attempt lifecycle --------------------------------------------------------------------
    def begin_attempt(self, job_id: str, worker: str, host: str, **facts: Any) -> tuple[str, Attempt | str]:
        """Start an attempt holding a lease, recording `facts` (e.g. its memory limit) in the job hash:
        ('OK', Attempt), ('EXHAUSTED', Attempt), ('DONE', status) or ('MISSING', '')."""
        args: list[Any] = [worker, host, now_ms(), self.event_history, self.lease_ms, job_id]
        for name, value in facts.items():
            args += [name, value]
        reply = self._begin(keys=[keys.job(job_id), keys.events(job_id), keys.LEASES], args=args)
        verdict = _text(reply[0])
        if verdict == "MISSING":
            return verdict, ""
        if verdict == "DONE":
            return verdict, _text(reply[1])
        last_death = self._decode_record(reply[3], job_id) if len(reply) > 3 and reply[3] else None
        return verdict, Attempt(job_id, int(reply[1]), int(reply[2]), last_death)

    def load_checkpoint(self, job_id: str) -> Checkpoint | None:
        return _checkpoint(self.r.hmget(keys.checkpoint(job_id), "seq", "data", "saved_at"))

    def start_in_horse(self, attempt: Attempt, pid: int) -> tuple[bool, Checkpoint | None]:
        """One round trip as a run starts: record the horse's pid (fenced) and fetch the checkpoint to
        resume from. (False, ...) when the attempt is already STALE."""
        try:
            with self.r.pipeline(transaction=False) as pipe:
                self._set_fields(keys=[keys.job(attempt.job_id)], args=[attempt.epoch, "horse_pid", pid],
                                 client=pipe)
                pipe.hmget(keys.checkpoint(attempt.job_id), "seq", "data", "saved_at")
                written, checkpoint = pipe.execute()
            return _text(written) != STALE, _checkpoint(checkpoint)
        except redis.exceptions.NoScriptError:  # the server restarted between loading and running the script
            return self.set_fields(attempt, horse_pid=pid), self.load_checkpoint(attempt.job_id)

    def save_checkpoint(self, attempt: Attempt, data: bytes, done: int | None = None,
                        total: int | None = None) -> int | str:
        """Persist a checkpoint under the attempt's epoch; the new seq, or STALE."""
        job_id = attempt.job_id
        reply = self._save(
            keys=[keys.job(job_id), keys.checkpoint(job_id), keys.checkpoint_history(job_id), keys.LEASES],
            args=[attempt.epoch, data, now_ms(), "" if done is None else done,
                  "" if total is None else total, self.checkpoint_history, self.lease_ms, job_id],
        )
        return STALE if _text(reply) == STALE else int(reply)

    def set_fields(self, attempt: Attempt, **fields: Any) -> bool:
        """Fenced HSET of plain fields (progress, horse pid); False when STALE."""
        args: list[Any] = [attempt.epoch]
        for name, value in fields.items():
            args += [name, value]
        return _text(self._set_fields(keys=[keys.job(attempt.job_id)], args=args)) != STALE

    def complete(self, attempt: Attempt, result: bytes) -> bool:
        return self._finish_attempt(attempt, "completed", "completed", result=result)

    def fail(self, attempt: Attempt, error: str) -> bool:
        return self._finish_attempt(attempt, "failed", "failed", error=error)

    def park(self, attempt: Attempt, reason: str) -> bool:
        return self._finish_attempt(attempt, "parked", "parked", parked_reason=reason)

    def _finish_attempt(self, attempt: Attempt, status: str, event: str, **fields: Any) -> bool:
        job_id = attempt.job_id
        args: list[Any] = [attempt.epoch, status, now_ms(), event, self.event_history, job_id]
        for name, value in fields.items():
            args += [name, value]
        reply = self._finish(
            keys=[keys.job(job_id), keys.events(job_id), keys.PARKED, keys.LEASES], args=args
        )
        return _text(reply) != STALE

    def record_death(self, attempt: Attempt, cause: str, evidence: dict[str, Any], counts: bool,
                     memory: bool) -> DeathCount | None:
        """Append a death to the timeline and count it; None when the attempt is STALE."""
        job_id = attempt.job_id
        reply = self._death(
            keys=[keys.job(job_id), keys.events(job_id)],
            args=[attempt.epoch, cause, encode(evidence), now_ms(), int(counts), int(memory),
                  self.event_history, int(evidence.get("rss") or 0), job_id],
        )
        if _text(reply) == STALE:
            return None
        return DeathCount(int(reply[1]), int(reply[2]), int(reply[3]), int(reply[4]))

    def mark_requeued(self, attempt: Attempt, reason: str, queue: str, rerouted: bool = False,
                      delay: float = 0.0) -> bool:
        """The attempt's job goes back to the front of `queue` (after `delay` seconds) in one step; a
        reroute (on_oom_queue) starts its memory count anew. False when the attempt is STALE."""
        reply = self._requeue(keys=[keys.job(attempt.job_id), keys.events(attempt.job_id), keys.LEASES],
                              args=[attempt.epoch, now_ms(), reason, queue, self.event_history, int(rerouted),
                                    attempt.job_id, int(delay * 1000)])
        return _text(reply) != STALE

    def promote_due(self, at_ms: int | None = None) -> int:
        """Move delayed retries whose time has come into their queues; how many were due."""
        return int(self._promote(args=[now_ms() if at_ms is None else at_ms]))

    def rescue_stranded(self, job_id: str, queue: str) -> bool:
        return bool(self._rescue(args=[job_id, queue]))

    def renew_lease(self, attempt: Attempt) -> bool:
        """Push the attempt's lease deadline to now + lease_ttl; False when the attempt is STALE."""
        reply = self._renew(keys=[keys.job(attempt.job_id), keys.LEASES],
                            args=[attempt.epoch, self.lease_ms, attempt.job_id])
        return _text(reply) != STALE

    def server_ms(self) -> int:
        """The Redis server's clock: the one lease deadlines are written in."""
        seconds, micros = self.r.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def expired_leases(self, at_ms: int, limit: int = 100) -> list[str]:
        """Job ids whose lease deadline has passed (cost grows with what expired, not with all jobs)."""
        return [_text(m) for m in self.r.zrangebyscore(keys.LEASES, "-inf", at_ms, start=0, num=limit)]

    def claim_lost(self, job_id: str, at_ms: int) -> "Claim | None":
        """Take over an expired attempt (one caller wins): the job is back at the front of its queue, or
        parked when it keeps getting lost without progress. None when the lease is not expired or gone."""
        reply = self._claim(keys=[keys.job(job_id), keys.events(job_id), keys.LEASES, keys.PARKED],
                            args=[job_id, at_ms, self.event_history])
        if not reply:
            return None
        epoch, stuck, attempt, queue, seq, reason = reply
        return Claim(job_id, int(epoch), int(stuck), int(attempt), _text(queue), int(seq),
                     _text(reason) if reason else "")

    def drop_checkpoint(self, job_id: str) -> None:
        self.r.delete(keys.checkpoint(job_id))

    def release(self, job_id: str, more_attempts: int) -> str:
        """Operator requeue of a parked/failed job: 'OK', or the status that prevents it."""
        reply = self._release(keys=[keys.job(job_id), keys.events(job_id), keys.PARKED],
                              args=[now_ms(), more_attempts, job_id, self.event_history])
        return _text(reply)

    # --- reading ------------------------------------------------------------------------------
    def job_fields(self, job_id: str) -> dict[str, str]:
        raw = self.r.hgetall(keys.job(job_id))
        return {_text(k): _text(v) for k, v in raw.items() if k != b"result" and k != b"last_death"}

    def result_bytes(self, job_id: str) -> bytes | None:
        return self.r.hget(keys.job(job_id), "result")

    def last_death(self, job_id: str) -> dict[str, Any] | None:
        raw = self.r.hget(keys.job(job_id), "last_death")
        return self._decode_record(raw, job_id) if raw else None

    def events(self, job_id: str, count: int | None = None) -> list[dict[str, Any]]:
        """The timeline, oldest first; evidence decoded (a corrupt one is reported in place)."""
        entries = self.r.xrange(keys.events(job_id), count=count)
        timeline = []
        for _, fields in entries:
            event = {_text(k): _text(v) for k, v in fields.items() if k != b"evidence"}
            if b"evidence" in fields:
                event["evidence"] = self._decode_record(fields[b"evidence"], job_id)
            timeline.append(event)
        return timeline

    def checkpoint_history_entries(self, job_id: str) -> list[dict[str, int]]:
        entries = self.r.xrange(keys.checkpoint_history(job_id))
        return [{"seq": int(f[b"seq"]), "epoch": int(f[b"epoch"]), "saved_at": int(f[b"saved_at"]),
                 "bytes": len(f[b"data"])} for _, f in entries]

    def recent_deaths(self, count: int = 10) -> list[dict[str, str]]:
        """The last deaths across all jobs, newest first."""
        return [{_text(k): _text(v) for k, v in fields.items()}
                for _, fields in self.r.xrevrange(keys.DEATHS, count=count)]

    def parked(self) -> list[tuple[str, int]]:
        return [(_text(m), int(s)) for m, s in self.r.zrange(keys.PARKED, 0, -1, withscores=True)]

    def _decode_record(self, raw: bytes, job_id: str) -> dict[str, Any]:
        try:
            value = decode(raw, key=keys.job(job_id))
        except CorruptCheckpoint as exc:
            return {"corrupt": str(exc)}
        return value if isinstance(value, dict) else {"corrupt": f"expected a map, found {type(value).__name__}"}


def _checkpoint(values: list[Any]) -> Checkpoint | None:
    seq, data, saved_at = values
    if seq is None or data is None:
        return None
    return Checkpoint(int(seq), data, int(saved_at or 0))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
