"""Every Redis key resilient writes (RQ's own keys stay as RQ names them)."""

PREFIX = "resilient:"

LEASES = PREFIX + "leases"
PARKED = PREFIX + "parked"
DEATHS = PREFIX + "deaths"  # stream: the last deaths across all jobs (for top); named in scripts.py's Lua
DELAYED = PREFIX + "delayed"  # zset: job id -> when its retry may run (ms); named in scripts.py's Lua too
JOBS = PREFIX + "jobs"  # zset of every job id we know, scored by enqueue time
WORKERS = PREFIX + "workers"  # set of worker names that publish a status hash


def job(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def checkpoint(job_id: str) -> str:
    return f"{PREFIX}ckpt:{job_id}"


def checkpoint_history(job_id: str) -> str:
    return f"{PREFIX}ckpt:{job_id}:history"


def events(job_id: str) -> str:
    return f"{PREFIX}events:{job_id}"


def worker_status(name: str) -> str:
    return f"{PREFIX}worker:{name}"


def memory(job_id: str, attempt: int) -> str:
    return f"{PREFIX}mem:{job_id}:{attempt}"
