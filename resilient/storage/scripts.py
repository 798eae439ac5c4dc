"""The Lua scripts behind store.py. Each one runs atomically on the server; every write on behalf of
an attempt starts with the epoch check (_FENCE) so that a superseded attempt writes nothing."""

from rq.job import JobStatus as RQStatus

from ..model import JobStatus
from .keys import lua_names

STALE = "STALE"
_NAMES = lua_names()
# Job statuses by their names in model.JobStatus (and RQ's by RQ's), so that no script spells one itself.
_STATUSES = f"""
local QUEUED, RUNNING = '{JobStatus.QUEUED}', '{JobStatus.RUNNING}'
local COMPLETED, FAILED, PARKED = '{JobStatus.COMPLETED}', '{JobStatus.FAILED}', '{JobStatus.PARKED}'
local RQ_QUEUED, RQ_FAILED = '{RQStatus.QUEUED.value}', '{RQStatus.FAILED.value}'
local function is_final(status) return status == COMPLETED or status == FAILED or status == PARKED end
"""

# The timeline of a job is a capped list of msgpack maps, one per event, every value a string (a stream
# would cost ~4.7 KB even with one entry; the list costs its entries and ~100 bytes).
_EVENTS = """
local function add_event(key, cap, ...)
  local fields, event = {...}, {}
  for i = 1, #fields, 2 do event[fields[i]] = tostring(fields[i + 1]) end
  redis.call('RPUSH', key, cmsgpack.pack(event))
  redis.call('LTRIM', key, -tonumber(cap), -1)
end
"""
# Retention: once a job has ended, every key of its own expires (its hash, checkpoint, checkpoint history,
# timeline, ctx.once records and the memory history of each attempt): after its own `keep` (set at enqueue) or `keep` (ARGV)
# when it completed, after the longer of its own and `keep_failed` when it failed or was parked. An
# operator's requeue makes them persistent again.
_RETAIN = """
local function job_keys(job_id)
  local found = {job_key(job_id), ckpt_key(job_id), ckpt_history_key(job_id), events_key(job_id), once_key(job_id)}
  for attempt = 1, tonumber(redis.call('HGET', job_key(job_id), 'attempt') or '0') do
    table.insert(found, mem_key(job_id, attempt))
  end
  return found
end
local function expire_job(job_id, status, keep, keep_failed)
  local own = tonumber(redis.call('HGET', job_key(job_id), 'keep') or '0')
  local ttl = math.max(own, tonumber(keep_failed))
  if status == COMPLETED then ttl = own > 0 and own or tonumber(keep) end
  for _, key in ipairs(job_keys(job_id)) do redis.call('EXPIRE', key, ttl) end
end
local function persist_job(job_id)
  for _, key in ipairs(job_keys(job_id)) do redis.call('PERSIST', key) end
end
"""

# Each script starts by comparing the attempt's epoch with the job's: a superseded attempt writes nothing.
# A job in a final status takes no more writes from any attempt either (completed stays completed, once):
# RQ may take a job whose result we stored down its failure path when its own bookkeeping fails.
_FENCE = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 'STALE' end
local fenced_status = redis.call('HGET', KEYS[1], 'status')
if is_final(fenced_status) then return 'STALE' end
"""
# The clock seam: whatever is compared across hosts (lease deadlines, when a delayed retry is due) is the
# Redis server's clock, here and in Store.server_ms(), so hosts with skewed clocks agree. Host clocks only
# stamp events for display, and time what one host compares with itself (the stall watchdog).
_SERVER_MS = """
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""
# --- epochs that never go backwards (a failover may lose the write that raised one: docs/design.md) -------
# The next epoch is the server's clock in ms, or one more than the last when the clock is not ahead of it.
# A BEGIN lost in a failover cannot have its number handed out again: the new primary's clock is past it by
# then (servers' clocks agree far better than the seconds a failover takes).
_NEXT_EPOCH = """
local function next_epoch(job_key)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local epoch = math.max(tonumber(redis.call('HGET', job_key, 'epoch') or '0') + 1, now)
  redis.call('HSET', job_key, 'epoch', string.format('%d', epoch))
  return epoch
end
"""
# --- end of epochs ------------------------------------------------------------------------------------------
_PUSH_BACK = """
-- Back into RQ's queue (its key names are pinned with rq 3.x), at the front, or into our delayed set.
local function push_back(job_id, queue, delay_ms, now)
  if tonumber(delay_ms) > 0 then
    redis.call('ZADD', DELAYED, tonumber(now) + tonumber(delay_ms), job_id)
    return
  end
  redis.call('SADD', RQ_QUEUES, rq_queue_key(queue))
  redis.call('HSET', rq_job_key(job_id), 'status', RQ_QUEUED, 'origin', queue)
  redis.call('LPUSH', rq_queue_key(queue), job_id)
end
"""

BEGIN = _SERVER_MS + _NEXT_EPOCH + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'MISSING'} end
if is_final(status) then return {'DONE', status} end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
local epoch = next_epoch(KEYS[1])
local free = tonumber(redis.call('HGET', KEYS[1], 'free') or '0')  -- attempts ended by no fault of the job
if attempt - free > tonumber(redis.call('HGET', KEYS[1], 'max_attempts')) then
  return {'EXHAUSTED', epoch, attempt}
end
redis.call('HSET', KEYS[1], 'status', RUNNING, 'worker', ARGV[1], 'host', ARGV[2], 'started_at', ARGV[3])
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[3], server_ms() + tonumber(ARGV[5]), ARGV[6])
add_event(KEYS[2], ARGV[4], 'type', 'started', 'at', ARGV[3], 'attempt', attempt, 'epoch', epoch,
  'worker', ARGV[1], 'host', ARGV[2])
-- and what the attempt resumes from, so that the horse starts with no round trip of its own
local checkpoint = redis.call('HMGET', KEYS[4], 'seq', 'data', 'saved_at')
return {'OK', epoch, attempt, redis.call('HGET', KEYS[1], 'last_death') or false, checkpoint[1] or false,
  checkpoint[2] or false, checkpoint[3] or false}
"""

# Five calls, the least a fenced save can make (each call inside a script costs about as much as a small
# command's own work): the fence and the seq in one read, the state, its history entry, the job's fields.
# The lease is the worker parent's to renew (RENEW, every second), not each save's.
SAVE = """
local job = redis.call('HMGET', KEYS[1], 'epoch', 'status', 'seq')
if job[1] ~= ARGV[1] or is_final(job[2]) then return 'STALE' end
local seq = tonumber(job[3] or '0') + 1
local bytes = string.len(ARGV[2])
redis.call('HSET', KEYS[2], 'epoch', ARGV[1], 'seq', seq, 'data', ARGV[2], 'saved_at', ARGV[3], 'bytes', bytes)
-- the history keeps what each save was, not a second copy of the state
redis.call('RPUSH', KEYS[3], cmsgpack.pack({seq = seq, epoch = tonumber(ARGV[1]), saved_at = tonumber(ARGV[3]),
  bytes = bytes}))
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[6]), -1)
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'seq', seq, 'saved_at', ARGV[3], 'done', ARGV[4], 'total', ARGV[5], 'ckpt_done', ARGV[4])
else
  redis.call('HSET', KEYS[1], 'seq', seq, 'saved_at', ARGV[3])
end
return seq
"""

SET_FIELDS = _FENCE + """
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 'OK'
"""

# ctx.once: the effect's result under its key, kept if one is there already (the first record wins): 1 when
# this call wrote it.
ONCE = _FENCE + """
return redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3])
"""

# The peak RSS of an attempt's horse: the job's highest in its hash, and the last 20 of its function (what
# admission learns an expected peak from; they expire 30 days after the function last ran).
_RECORD_PEAK = """
local function record_peak(job_key, rss)
  rss = tonumber(rss)
  if rss <= 0 then return end
  if rss > tonumber(redis.call('HGET', job_key, 'peak_rss') or '0') then redis.call('HSET', job_key, 'peak_rss', rss) end
  local name = redis.call('HGET', job_key, 'name')
  if not name then return end
  redis.call('LPUSH', peaks_key(name), rss)
  redis.call('LTRIM', peaks_key(name), 0, 19)
  redis.call('EXPIRE', peaks_key(name), 2592000)
end
"""

# ARGV: epoch, new status, now, event type, events cap, job id, the horse's peak rss (0: unknown), keep,
# keep_failed (seconds), then field/value pairs for hash and event.
FINISH = _FENCE + _RECORD_PEAK + """
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[3])
record_peak(KEYS[1], ARGV[7])
local event = {'type', ARGV[4], 'at', ARGV[3], 'epoch', ARGV[1]}
for i = 10, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  if ARGV[i] ~= 'result' then table.insert(event, ARGV[i]); table.insert(event, ARGV[i + 1]) end
end
add_event(KEYS[2], ARGV[5], unpack(event))
if ARGV[2] == PARKED then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[6]) end
redis.call('ZREM', KEYS[4], ARGV[6])
expire_job(ARGV[6], ARGV[2], ARGV[8], ARGV[9])
return 'OK'
"""

# Records a death in the job's hash and timeline and counts it: `stuck` counts deaths that count toward the
# cap and `mem_stuck` memory deaths, each restarting at 1 when the checkpoint seq has moved; `free` counts
# attempts that ended by no fault of the job (a step-aside for neighbours or a shutdown): max_attempts does
# not count those. Shared by
# DEATH (a worker judged its horse's end) and CLAIM (a reaper found a lease expired); the decision that
# follows is Python's (deaths.decide), for both alike.
_RECORD_DEATH = """
local function record_death(job_key, events_key, job_id, epoch, cause, evidence, now, counts, memory, cap, rss,
                            charged)
  local seq = tonumber(redis.call('HGET', job_key, 'seq') or '0')
  local function bump(counter, at_seq)
    local last = tonumber(redis.call('HGET', job_key, at_seq) or '-1')
    redis.call('HSET', job_key, at_seq, seq)
    if seq ~= last then redis.call('HSET', job_key, counter, 1); return 1 end
    return redis.call('HINCRBY', job_key, counter, 1)
  end
  local stuck = tonumber(redis.call('HGET', job_key, 'stuck') or '0')
  local mem_stuck = tonumber(redis.call('HGET', job_key, 'mem_stuck') or '0')
  if counts == '1' then stuck = bump('stuck', 'stuck_seq') end
  if memory == '1' then mem_stuck = bump('mem_stuck', 'mem_seq') end
  record_peak(job_key, rss)
  if charged == '0' then redis.call('HINCRBY', job_key, 'free', 1) end
  redis.call('HSET', job_key, 'last_death', evidence)
  redis.call('HINCRBY', job_key, 'deaths', 1)
  add_event(events_key, cap, 'type', 'died', 'at', now, 'epoch', epoch, 'cause', cause, 'seq', seq,
    'evidence', evidence)
  redis.call('XADD', DEATHS, 'MAXLEN', '~', 200, '*', 'job_id', job_id, 'cause', cause, 'at', now)
  local attempt = tonumber(redis.call('HGET', job_key, 'attempt'))
  return {stuck, mem_stuck, seq, attempt - tonumber(redis.call('HGET', job_key, 'free') or '0')}
end
"""

# ARGV: epoch, cause, evidence (msgpack), now, counts toward the poison cap (0/1), is a memory death (0/1),
# events cap, the horse's peak rss, job id, counts toward max_attempts (0/1)
DEATH = _FENCE + _RECORD_PEAK + _RECORD_DEATH + """
local counted = record_death(KEYS[1], KEYS[2], ARGV[9], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
  ARGV[7], ARGV[8], ARGV[10])
return {'OK', counted[1], counted[2], counted[3], counted[4]}
"""

# ARGV: epoch, now, reason, queue, events cap, rerouted (0/1), job id, delay ms
REQUEUE = _FENCE + _SERVER_MS + _PUSH_BACK + """
if fenced_status ~= RUNNING then return 'STALE' end  -- requeued already: a retried call pushes nothing twice
redis.call('HSET', KEYS[1], 'status', QUEUED, 'queue', ARGV[4])
redis.call('ZREM', KEYS[3], ARGV[7])
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'mem_stuck', 0); redis.call('HDEL', KEYS[1], 'mem_seq') end
push_back(ARGV[7], ARGV[4], ARGV[8], server_ms())
add_event(KEYS[2], ARGV[5], 'type', 'requeued', 'at', ARGV[2], 'from_seq',
  redis.call('HGET', KEYS[1], 'seq') or '0', 'reason', ARGV[3], 'queue', ARGV[4], 'delay_ms', ARGV[8])
return 'OK'
"""

# Delayed retries whose time has come go back to their queue; any caller may run it, each job moves once.
# Also trims the indexes of jobs whose keys have expired by now: `jobs` (by enqueue time) and `parked` (by
# when), both older than keep_failed (ARGV[2], ms). Costs O(log N) when there is nothing to trim.
PROMOTE = _SERVER_MS + _PUSH_BACK + """
local now = ARGV[1] ~= '' and tonumber(ARGV[1]) or server_ms()
redis.call('ZREMRANGEBYSCORE', JOBS, '-inf', now - tonumber(ARGV[2]))
redis.call('ZREMRANGEBYSCORE', PARKED_SET, '-inf', now - tonumber(ARGV[2]))
local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now, 'LIMIT', 0, 100)
for _, job_id in ipairs(due) do
  redis.call('ZREM', DELAYED, job_id)
  local queue = redis.call('HGET', job_key(job_id), 'queue')
  if queue and redis.call('HGET', job_key(job_id), 'status') == QUEUED then
    push_back(job_id, queue, 0, now)
  end
end
return #due
"""

# A queue entry stranded in RQ's intermediate list (its worker died between taking it and starting it):
# back to the front of its queue, if it is still ours to move. ARGV: job id, queue, and '1' when the caller
# took the job and could not start it (a multi-queue worker's BLPOP leaves no intermediate entry).
RESCUE = _PUSH_BACK + """
if redis.call('HGET', job_key(ARGV[1]), 'status') ~= QUEUED then return 0 end
if redis.call('ZSCORE', LEASES, ARGV[1]) or redis.call('ZSCORE', DELAYED, ARGV[1]) then
  return 0
end
if redis.call('LPOS', rq_queue_key(ARGV[2]), ARGV[1]) then  -- it is queued already: just drop the stray entry
  redis.call('LREM', rq_intermediate_key(ARGV[2]), 0, ARGV[1])
  return 0
end
if redis.call('LREM', rq_intermediate_key(ARGV[2]), 0, ARGV[1]) == 0 and ARGV[3] ~= '1' then return 0 end
push_back(ARGV[1], ARGV[2], 0, 0)
return 1
"""

# A queue entry the worker refuses (payload, record or function not acceptable). It leaves RQ's intermediate
# list; a job still waiting to run fails with the reason, in our hash and in RQ's; a job another attempt
# owns keeps its state, only this entry goes. KEYS: job, events, RQ intermediate list, RQ job hash, RQ failed
# registry. ARGV: job id, reason, now ms, events cap, RQ failed-registry score (s), RQ record ttl (s),
# keep_failed (s).
REFUSE = """
redis.call('LREM', KEYS[3], 1, ARGV[1])
local status = redis.call('HGET', KEYS[1], 'status')
if status and status ~= QUEUED then return status end
if status then
  redis.call('HSET', KEYS[1], 'status', FAILED, 'error', ARGV[2], 'finished_at', ARGV[3])
  add_event(KEYS[2], ARGV[4], 'type', 'failed', 'at', ARGV[3], 'error', ARGV[2])
  expire_job(ARGV[1], FAILED, ARGV[7], ARGV[7])
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('HSET', KEYS[4], 'status', RQ_FAILED, 'exc_info', ARGV[2])
  redis.call('EXPIRE', KEYS[4], ARGV[6])
  redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
end
return 'REFUSED'
"""

# A job that cannot fit under this worker's memory limit, turned away before any attempt: its entry leaves
# RQ's intermediate list, and it goes to the front of `to` (its on_oom_queue) or, with no such queue, is
# parked with the reason. Nothing is counted: it never ran. ARGV: job id, from queue, to queue ('' = park),
# reason, now, events cap, keep_failed (s).
TURN_AWAY = _PUSH_BACK + """
if redis.call('HGET', job_key(ARGV[1]), 'status') ~= QUEUED then return 0 end
redis.call('LREM', rq_intermediate_key(ARGV[2]), 0, ARGV[1])
if ARGV[3] ~= '' then
  redis.call('HSET', job_key(ARGV[1]), 'queue', ARGV[3])
  push_back(ARGV[1], ARGV[3], 0, 0)
  add_event(KEYS[1], ARGV[6], 'type', 'requeued', 'at', ARGV[5], 'from_seq',
    redis.call('HGET', job_key(ARGV[1]), 'seq') or '0', 'reason', ARGV[4], 'queue', ARGV[3], 'delay_ms', 0)
  return 1
end
redis.call('HSET', job_key(ARGV[1]), 'status', PARKED, 'parked_reason', ARGV[4], 'finished_at', ARGV[5])
redis.call('ZADD', PARKED_SET, ARGV[5], ARGV[1])
add_event(KEYS[1], ARGV[6], 'type', 'parked', 'at', ARGV[5], 'parked_reason', ARGV[4])
expire_job(ARGV[1], PARKED, ARGV[7], ARGV[7])
return 2
"""

# ARGV: epoch, ttl ms, job id. XX: a finished attempt's lease is gone and must stay gone. Returns when the
# attempt last made a checkpoint (ms; its start when it has made none yet), for the stall watchdog.
RENEW = _FENCE + _SERVER_MS + """
redis.call('ZADD', KEYS[2], 'XX', server_ms() + tonumber(ARGV[2]), ARGV[3])
local times = redis.call('HMGET', KEYS[1], 'saved_at', 'started_at')
return math.max(tonumber(times[1] or '0'), tonumber(times[2] or '0'))
"""

# A lease past its deadline: the attempt is lost (worker or container gone, or paused). One caller wins: it
# bumps the epoch (fencing the old attempt out), records a `lost` death, and holds the lease itself under the
# new epoch (if it dies before it settles the job, the next reaper claims it again). The caller then decides
# with the same rules as for any death, from the rule parameters stored with the job, and requeues or parks
# under that epoch. ARGV: job id, now, events cap, lease ms.
CLAIM = _RECORD_PEAK + _RECORD_DEATH + _NEXT_EPOCH + """
local deadline = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not deadline or tonumber(deadline) > tonumber(ARGV[2]) then return false end
if redis.call('HGET', KEYS[1], 'status') ~= RUNNING then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return false
end
local lost_epoch = redis.call('HGET', KEYS[1], 'epoch')
local epoch = next_epoch(KEYS[1])
local job = redis.call('HMGET', KEYS[1], 'worker', 'host', 'seq', 'queue', 'max_attempts', 'max_stuck',
  'max_mem_stuck', 'on_oom_queue')
local evidence = cmsgpack.pack({cause = 'lost', worker = job[1], host = job[2], lease_deadline = tonumber(deadline),
  detected_at = tonumber(ARGV[2]), seq = tonumber(job[3] or '0')})
local counted = record_death(KEYS[1], KEYS[2], ARGV[1], lost_epoch, 'lost', evidence, ARGV[2], '1', '0', ARGV[3], '0',
  '1')
redis.call('ZADD', KEYS[3], tonumber(ARGV[2]) + tonumber(ARGV[4]), ARGV[1])  -- ARGV[2]: the server's now
return {epoch, counted[1], counted[2], counted[3], counted[4], evidence, job[4], job[5], job[6] or '3',
  job[7] or '2', job[8] or ''}
"""

# An operator's requeue, in one step: new epoch (fences out anything still running), counters reset, more
# attempts, out of RQ's failed registry and back at the front of its queue. Refused (NO_RQ_RECORD, nothing
# written) when RQ's record of the job is gone: the caller rebuilds it first.
# ARGV: now, more attempts, job id, events cap, restart (0/1: drop the checkpoint too)
RELEASE = _PUSH_BACK + _NEXT_EPOCH + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'MISSING' end
if status == COMPLETED or status == QUEUED then return status end
local rq_job = 'rq:job:' .. ARGV[3]
if redis.call('EXISTS', rq_job) == 0 then return 'NO_RQ_RECORD' end
next_epoch(KEYS[1])
local counted = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0') - tonumber(redis.call('HGET', KEYS[1], 'free') or '0')
redis.call('HSET', KEYS[1], 'status', QUEUED, 'stuck', 0, 'mem_stuck', 0,
  'max_attempts', counted + tonumber(ARGV[2]))
redis.call('HDEL', KEYS[1], 'parked_reason', 'error')
redis.call('ZREM', KEYS[3], ARGV[3])
if ARGV[5] == '1' then redis.call('DEL', KEYS[4]) end
local queue = redis.call('HGET', KEYS[1], 'queue')
redis.call('ZREM', 'rq:failed:' .. queue, ARGV[3])
redis.call('PERSIST', rq_job)  -- a failed job's record carries RQ's failure TTL
push_back(ARGV[3], queue, 0, ARGV[1])
add_event(KEYS[2], ARGV[4], 'type', 'requeued', 'at', ARGV[1], 'from_seq',
  redis.call('HGET', KEYS[1], 'seq') or '0', 'reason', 'operator', 'queue', queue)
persist_job(ARGV[3])
return 'OK'
"""

# A new job in one step: our record, its first event and its index entry, RQ's record (the fields RQ's own
# enqueue would save) and its queue entry, or nothing when either record exists (an id is used once).
# KEYS: job, events, RQ job hash, RQ queue. ARGV: job id, enqueued at (ms), the first event (msgpack), our
# fields and values as one msgpack array, then RQ's the same way ('' for none).
ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(cmsgpack.unpack(ARGV[4])))
redis.call('ZADD', JOBS, ARGV[2], ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[3])
if ARGV[5] ~= '' then  -- (empty: a job made without an RQ record, in tests of the store alone)
  redis.call('HSET', KEYS[3], unpack(cmsgpack.unpack(ARGV[5])))
  redis.call('SADD', RQ_QUEUES, KEYS[4])
  redis.call('RPUSH', KEYS[4], ARGV[1])
end
return 1
"""

# The named fields of many jobs in one reply, packed (msgpack): what `status` shows of each running job, read
# server-side instead of one command per job. The caller sends at most ~1,000 ids per call, so that each call
# holds the server for a few ms. ARGV: how many names, the names, then job ids. A missing field is false.
FIELDS = """
local count = tonumber(ARGV[1])
local names = {unpack(ARGV, 2, count + 1)}
local rows = {}
for i = count + 2, #ARGV do rows[#rows + 1] = redis.call('HMGET', job_key(ARGV[i]), unpack(names)) end
return cmsgpack.pack(rows)
"""

# An operator gives up on a parked job: it becomes failed with the reason, leaves the parked set, and its
# timeline says so; its keys keep the expiry its parking gave them. 'OK', or the status that prevents it
# ('MISSING' for no such job). KEYS: job, events, parked. ARGV: job id, reason, now (ms), events cap.
CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= PARKED then return status or 'MISSING' end
redis.call('HSET', KEYS[1], 'status', FAILED, 'error', ARGV[2], 'finished_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'parked_reason')
redis.call('ZREM', KEYS[3], ARGV[1])
add_event(KEYS[2], ARGV[4], 'type', 'cancelled', 'at', ARGV[3], 'error', ARGV[2])
return 'OK'
"""

# Every script starts with the status names, the key names, and the timeline and retention functions; the
# ones a running job calls at its safe points (a save, a field write, a ctx.once record) with the status names
# only: defining the other functions on each call cost ~0.5-1.5 µs of a save's ~7 µs on the server.
(ENQUEUE, BEGIN, FINISH, DEATH, REQUEUE, PROMOTE, RESCUE, REFUSE, TURN_AWAY, RENEW, CLAIM, RELEASE, FIELDS,
 CANCEL) = (_STATUSES + _NAMES + _EVENTS + _RETAIN + script for script in (
    ENQUEUE, BEGIN, FINISH, DEATH, REQUEUE, PROMOTE, RESCUE, REFUSE, TURN_AWAY, RENEW, CLAIM, RELEASE, FIELDS,
    CANCEL))
SAVE, SET_FIELDS, ONCE = (_STATUSES + script for script in (SAVE, SET_FIELDS, ONCE))
