"""The Lua scripts behind store.py. Each one runs atomically on the server; every write on behalf of
an attempt starts with the epoch check (_FENCE) so that a superseded attempt writes nothing."""

from .keys import lua_names

STALE = "STALE"
_NAMES = lua_names()

# Each script starts by comparing the attempt's epoch with the job's: a superseded attempt writes nothing.
# A job in a final status takes no more writes from any attempt either (completed stays completed, once):
# RQ may take a job whose result we stored down its failure path when its own bookkeeping fails.
_FENCE = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 'STALE' end
local fenced_status = redis.call('HGET', KEYS[1], 'status')
if fenced_status == 'completed' or fenced_status == 'failed' or fenced_status == 'parked' then return 'STALE' end
"""
# Lease deadlines use the server's clock, so hosts with skewed clocks agree on what has expired.
_SERVER_MS = """
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""
_PUSH_BACK = _NAMES + """
-- Back into RQ's queue (its key names are pinned with rq 3.x), at the front, or into our delayed set.
local function push_back(job_id, queue, delay_ms, now)
  if tonumber(delay_ms) > 0 then
    redis.call('ZADD', DELAYED, tonumber(now) + tonumber(delay_ms), job_id)
    return
  end
  redis.call('SADD', RQ_QUEUES, rq_queue_key(queue))
  redis.call('HSET', rq_job_key(job_id), 'status', 'queued', 'origin', queue)
  redis.call('LPUSH', rq_queue_key(queue), job_id)
end
"""

BEGIN = _SERVER_MS + """
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

SAVE = _FENCE + _SERVER_MS + """
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

SET_FIELDS = _FENCE + """
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 'OK'
"""

# ARGV: epoch, new status, now, event type, events cap, job id, then field/value pairs for hash and event.
FINISH = _FENCE + """
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
DEATH = _FENCE + _NAMES + """
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
redis.call('XADD', DEATHS, 'MAXLEN', '~', 200, '*', 'job_id', ARGV[9], 'cause', ARGV[2], 'at', ARGV[4])
return {'OK', stuck, mem_stuck, seq, tonumber(redis.call('HGET', KEYS[1], 'attempt'))}
"""

# ARGV: epoch, now, reason, queue, events cap, rerouted (0/1), job id, delay ms
REQUEUE = _FENCE + _PUSH_BACK + """
if fenced_status ~= 'running' then return 'STALE' end  -- requeued already: a retried call pushes nothing twice
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
PROMOTE = _PUSH_BACK + """
local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, job_id in ipairs(due) do
  redis.call('ZREM', DELAYED, job_id)
  local queue = redis.call('HGET', job_key(job_id), 'queue')
  if queue and redis.call('HGET', job_key(job_id), 'status') == 'queued' then
    push_back(job_id, queue, 0, ARGV[1])
  end
end
return #due
"""

# A queue entry stranded in RQ's intermediate list (its worker died between taking it and starting it):
# back to the front of its queue, if it is still ours to move. ARGV: job id, queue.
RESCUE = _PUSH_BACK + """
if redis.call('HGET', job_key(ARGV[1]), 'status') ~= 'queued' then return 0 end
if redis.call('ZSCORE', LEASES, ARGV[1]) or redis.call('ZSCORE', DELAYED, ARGV[1]) then
  return 0
end
if redis.call('LPOS', rq_queue_key(ARGV[2]), ARGV[1]) then  -- it is queued already: just drop the stray entry
  redis.call('LREM', rq_intermediate_key(ARGV[2]), 0, ARGV[1])
  return 0
end
if redis.call('LREM', rq_intermediate_key(ARGV[2]), 0, ARGV[1]) == 0 then return 0 end
push_back(ARGV[1], ARGV[2], 0, 0)
return 1
"""

# A queue entry the worker refuses (payload, record or function not acceptable). It leaves RQ's intermediate
# list; a job still waiting to run fails with the reason, in our hash and in RQ's; a job another attempt
# owns keeps its state, only this entry goes. KEYS: job, events, RQ intermediate list, RQ job hash, RQ failed
# registry. ARGV: job id, reason, now ms, events cap, RQ failed-registry score (s), RQ record ttl (s).
REFUSE = """
redis.call('LREM', KEYS[3], 1, ARGV[1])
local status = redis.call('HGET', KEYS[1], 'status')
if status and status ~= 'queued' then return status end
if status then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[2], 'finished_at', ARGV[3])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'type', 'failed', 'at', ARGV[3], 'error', ARGV[2])
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('HSET', KEYS[4], 'status', 'failed', 'exc_info', ARGV[2])
  redis.call('EXPIRE', KEYS[4], ARGV[6])
  redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
end
return 'REFUSED'
"""

# ARGV: epoch, ttl ms, job id. XX: a finished attempt's lease is gone and must stay gone. Returns when the
# attempt last made a checkpoint (ms; its start when it has made none yet), for the stall watchdog.
RENEW = _FENCE + _SERVER_MS + """
redis.call('ZADD', KEYS[2], 'XX', server_ms() + tonumber(ARGV[2]), ARGV[3])
local times = redis.call('HMGET', KEYS[1], 'saved_at', 'started_at')
return math.max(tonumber(times[1] or '0'), tonumber(times[2] or '0'))
"""

# A lease past its deadline: the attempt is lost (worker or container gone, or paused). One caller wins:
# it bumps the epoch (fencing the old attempt out) and gets the job back as 'queued', or 'parked' when the
# job died too often without progress. ARGV: job id, now, events cap.
CLAIM = _PUSH_BACK + """
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
redis.call('XADD', DEATHS, 'MAXLEN', '~', 200, '*', 'job_id', ARGV[1], 'cause', 'lost', 'at', ARGV[2])
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

# An operator's requeue, in one step: new epoch (fences out anything still running), counters reset, more
# attempts, out of RQ's failed registry and back at the front of its queue. Refused (NO_RQ_RECORD, nothing
# written) when RQ's record of the job is gone: the caller rebuilds it first.
# ARGV: now, more attempts, job id, events cap, restart (0/1: drop the checkpoint too)
RELEASE = _PUSH_BACK + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'MISSING' end
if status == 'completed' or status == 'queued' then return status end
local rq_job = 'rq:job:' .. ARGV[3]
if redis.call('EXISTS', rq_job) == 0 then return 'NO_RQ_RECORD' end
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0')
redis.call('HSET', KEYS[1], 'status', 'queued', 'stuck', 0, 'mem_stuck', 0,
  'max_attempts', attempt + tonumber(ARGV[2]))
redis.call('HDEL', KEYS[1], 'parked_reason', 'error')
redis.call('ZREM', KEYS[3], ARGV[3])
if ARGV[5] == '1' then redis.call('DEL', KEYS[4]) end
local queue = redis.call('HGET', KEYS[1], 'queue')
redis.call('ZREM', 'rq:failed:' .. queue, ARGV[3])
redis.call('PERSIST', rq_job)  -- a failed job's record carries RQ's failure TTL
push_back(ARGV[3], queue, 0, ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'type', 'requeued', 'at', ARGV[1],
  'from_seq', redis.call('HGET', KEYS[1], 'seq') or '0', 'reason', 'operator', 'queue', queue)
return 'OK'
"""
