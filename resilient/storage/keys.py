"""Every Redis key name, ours and the RQ ones we touch (as RQ itself names them), Lua included."""

from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.queue import Queue

PREFIX = "resilient:"

LEASES = PREFIX + "leases"
PARKED = PREFIX + "parked"
DEATHS = PREFIX + "deaths"  # stream: the last deaths across all jobs (for top)
DELAYED = PREFIX + "delayed"  # zset: job id -> when its retry may run (ms)
JOBS = PREFIX + "jobs"  # zset of every job id we know, scored by enqueue time
WORKERS = PREFIX + "workers"  # set of worker names that publish a status hash


def job(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def checkpoint(job_id: str) -> str:
    return f"{PREFIX}ckpt:{job_id}"


def checkpoint_history(job_id: str) -> str:
    """List: what each kept checkpoint was (seq, epoch, saved_at, bytes), not the state itself."""
    return f"{PREFIX}ckpt:{job_id}:history"


def events(job_id: str) -> str:
    """List: the job's timeline, one msgpack map per event."""
    return f"{PREFIX}events:{job_id}"


def once(job_id: str) -> str:
    """Hash: the recorded result of each ctx.once(key, ...) the job ran, by key."""
    return f"{PREFIX}once:{job_id}"


def worker_status(name: str) -> str:
    return f"{PREFIX}worker:{name}"


def peaks(function: str) -> str:
    """List: the peak RSS of the last attempts of a job function (bytes, newest first)."""
    return f"{PREFIX}peaks:{function}"


def memory(job_id: str, attempt: int) -> str:
    return f"{PREFIX}mem:{job_id}:{attempt}"


# RQ's keys, from RQ's own names for them.
RQ_QUEUES = Queue.redis_queues_keys  # set of queue keys


def rq_queue(name: str) -> str:
    return Queue.redis_queue_namespace_prefix + name


def rq_intermediate(name: str) -> str:
    """Where RQ keeps an entry between taking it off the queue and starting it."""
    return IntermediateQueue.get_intermediate_queue_key(rq_queue(name))


def rq_job(job_id: str) -> str:
    return Job.redis_job_namespace_prefix + job_id


def lua_names() -> str:
    """The same names for Lua scripts: constants and functions of a job id or queue name."""
    intermediate_suffix = rq_intermediate("").removeprefix(rq_queue(""))
    return f"""
local LEASES, PARKED_SET, DEATHS, DELAYED, RQ_QUEUES = '{LEASES}', '{PARKED}', '{DEATHS}', '{DELAYED}', '{RQ_QUEUES}'
local JOBS = '{JOBS}'
local function job_key(id) return '{job("")}' .. id end
local function ckpt_key(id) return '{checkpoint("")}' .. id end
local function ckpt_history_key(id) return '{checkpoint("")}' .. id .. '{checkpoint_history("").removeprefix(checkpoint(""))}' end
local function events_key(id) return '{events("")}' .. id end
local function once_key(id) return '{once("")}' .. id end
local function mem_key(id, attempt) return '{memory("", 0).removesuffix(":0")}' .. id .. ':' .. attempt end
local function rq_queue_key(name) return '{rq_queue("")}' .. name end
local function rq_intermediate_key(name) return '{rq_queue("")}' .. name .. '{intermediate_suffix}' end
local function rq_job_key(id) return '{rq_job("")}' .. id end
local function peaks_key(name) return '{peaks("")}' .. name end
"""
