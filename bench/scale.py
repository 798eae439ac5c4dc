"""Scenario 9: cost as work grows (issue 12, point 7).

A fresh server is filled in stages: N queued jobs, N finished jobs, L live leases (full: N=100k, L=10k; quick:
N=5k, L=1k). Each stage is written in pipelines of 1,000 jobs through the code that writes it for real:
the steps of Client.enqueue (RQ's Queue.create_job / enqueue_job, Store.create_job) and Store's own
begin_attempt / save_checkpoint / complete, whose scripts are queued on the pipeline (their replies are
checked once it ran). RQ's side of a job is written by RQ's own code as its worker would: a started job
gets Job.prepare_for_execution and an Execution (the started registry), a finished one Job._handle_success
(the record, its result, the finished registry). Before the fill, one job is enqueued both ways and the keys
compared, so the fill cannot drift from what Client.enqueue writes.

Measured at each stage: `status --json` (report.status + json.dumps, in process), one
`top` refresh (top.refresh + rendering it to text), the web dashboard's overview (GET /api/status on a
dashboard served from this process: the server time it reports in Server-Timing); empty and full, the reaper's pass with 0 and 100 expired leases;
Redis used_memory and bytes per job at each stage, side by side with plain rq filled the same way. Then a
soak: jobs finished with a retention of seconds, and Redis memory once their keys are gone, against where
it started.
"""

from __future__ import annotations

import copy
import io
import json
import math
import statistics
import time
import urllib.request
import uuid
from typing import Any, Callable

import redis
from rich.console import Console
from rq import Queue
from rq.executions import Execution
from rq.job import Job
from rq.registry import FinishedJobRegistry

from resilient import Client
from resilient.config import Settings
from resilient.model import Attempt
from resilient.ops import report, top
from resilient.runtime.rqjob import rq_queue
from resilient.runtime.supervisor import Reaper
from resilient.storage import keys
from resilient.storage.codec import encode, encode_state
from resilient.storage.store import Store
from resilient.web.server import WebOptions, serve_in_thread

from . import jobs, resilient_jobs
from .harness import BenchError, Env, wait_until
from .report import Aim, Result, Row, ms, ratio

AIM_VIEW_S = 0.5  # status --json and one top refresh
AIM_WEB_S = 0.2  # the dashboard's overview (/api/status), server time
AIM_REAP_WORK = 1.1  # bytes the server sends for a reaper pass on the full server ≤ this × on the empty one
AIM_SOAK = 0.05  # used_memory back within 5 % of where it started
BATCH = 1000
EXPIRED = 100  # leases expired for the second reaper pass (one pass claims up to 100)
SPEC = resilient_jobs.noop_job
QUEUE = SPEC.options.queue
RQ_QUEUE = "rq-scale"
WORKER = "bench-scale-worker"
HOST = "bench-host"
FACTS = {"limit": 8 << 30, "limit_source": "host", "soft": 0.7, "hard": 0.85, "critical": 0.95}  # as a worker's
LONG_LEASE = Settings(lease_ttl=3600.0)  # the live leases must not expire while we measure


def run(env: Env) -> Result:
    n, live = (5_000, 1_000) if env.quick else (100_000, 10_000)
    soak_jobs = 1_000 if env.quick else 10_000
    env.fresh()
    client = Client(env.redis, LONG_LEASE)
    _check_same_keys(env, client)
    env.fresh()
    fill_s: dict[str, float] = {}
    views = {"empty": _views(env, client)}
    reaps = {"empty": _reaper_passes(env, client)}
    env.fresh()  # the reaper's jobs gone; the scripts stay loaded
    used = {"empty": _used_memory(env.redis)}
    own: dict[str, float] = {}
    stages: list[tuple[str, int, Callable[[], list[str]]]] = [
        ("queued", n, lambda: enqueue_many(client, n)),
        ("finished", n, lambda: finish_many(client, n)),
        ("leases", live, lambda: lease_many(client, live)),
    ]
    for stage, count, fill in stages:
        start = time.perf_counter()
        ids = fill()
        fill_s[stage] = time.perf_counter() - start
        used[stage] = _used_memory(env.redis)
        own[stage] = _own_bytes(env.redis, ids[:: max(1, len(ids) // 200)])
        views[stage] = _views(env, client)
    retained = used_jobs(env.redis)
    reaps["full"] = _reaper_passes(env, client)
    per_job = {stage: (used[stage] - used[before]) / count
               for (stage, count, _), before in zip(stages, ["empty", "queued", "finished"])}
    rq_used = _plain_rq(env, n, live)
    rq_per_job = {stage: (rq_used[stage] - rq_used[before]) / count
                  for (stage, count, _), before in zip(stages, ["empty", "queued", "finished"])}
    soak = _soak(env, soak_jobs, fill_s["finished"] / n)
    full = views["leases"]

    result = Result(raw={"n": n, "leases": live, "fill_s": fill_s, "used_memory": used, "bytes_per_job": per_job,
                         "own_keys_bytes_per_job": own, "rq_used_memory": rq_used,
                         "rq_bytes_per_job": rq_per_job, "views_s": views, "reaper_s": reaps, "soak": soak})
    k = f"{n // 1000}k"
    scale = f"{k} queued + {k} finished + {live // 1000}k leases"
    result.rows += [
        Row(f"9. status --json: empty, + {k} queued, + {k} finished, + {live // 1000}k leases",
            " → ".join(ms(v["status"]) for v in views.values()), ""),
        Row(f"9. top refresh: empty, + {k} queued, + {k} finished, + {live // 1000}k leases",
            " → ".join(ms(v["top"]) for v in views.values()), ""),
        Row(f"9. web overview (/api/status, server time): empty, + {k} queued, + {k} finished, + {live // 1000}k leases",
            " → ".join(ms(v["web"]) for v in views.values()), ""),
        Row("9. reaper pass, 0 expired (best of 10): empty → full", f"{_ms1(reaps['empty']['0'])} → {_ms1(reaps['full']['0'])}",
            ""),
        Row(f"9. reaper pass, {EXPIRED} expired (best of 5): empty → full",
            f"{_ms1(reaps['empty'][str(EXPIRED)])} → {_ms1(reaps['full'][str(EXPIRED)])}", ""),
        Row("9. what the server did for that pass: commands (scripts' own included), bytes sent: empty → full",
            f"{reaps['empty']['commands']:.0f} → {reaps['full']['commands']:.0f}, "
            f"{reaps['empty']['sent'] / 1024:.0f} → {reaps['full']['sent'] / 1024:.0f} KiB", ""),
        Row("9. Redis used_memory, empty", _mib(used["empty"]), _mib(rq_used["empty"])),
    ]
    for stage, count, _ in stages:
        what = {"queued": "queued job", "finished": "finished job", "leases": "running job (lease)"}[stage]
        result.rows.append(Row(f"9. Redis bytes per {what} (+{count}; used_memory {_mib(used[stage])})",
                               f"{per_job[stage]:.0f} B (ours {own[stage]:.0f} B)", f"{rq_per_job[stage]:.0f} B",
                               ratio(per_job[stage], rq_per_job[stage])))
    result.rows.append(Row(f"9. soak: {soak['jobs']} jobs finished, keep {soak['keep']} s: used_memory start → "
                           "peak → after", f"{_mib(soak['start'])} → {_mib(soak['peak'])} → {_mib(soak['after'])} "
                           f"({soak['after'] / soak['start'] - 1:+.1%})", ""))
    worst_view = max(full["status"], full["top"])
    result.aims += [
        Aim("9. scale", f"status --json and one top refresh ≤ {AIM_VIEW_S:g} s at {scale}",
            f"status {ms(full['status'])}, top {ms(full['top'])}", worst_view <= AIM_VIEW_S),
        Aim("9. scale", f"web overview ≤ {AIM_WEB_S * 1000:.0f} ms server time at {scale} "
            f"({retained} jobs retained)", ms(full["web"]), full["web"] <= AIM_WEB_S),
        _reap_aim(reaps),
        Aim("9. scale", f"soak: used_memory back within {AIM_SOAK:.0%} of its start once retention passed",
            f"{soak['after'] / soak['start'] - 1:+.1%} ({soak['start']} → {soak['after']} B)",
            abs(soak["after"] / soak["start"] - 1) <= AIM_SOAK),
    ]
    result.notes.append(
        f"9. fill ({', '.join(f'{s} {t:.1f} s' for s, t in fill_s.items())}): pipelines of {BATCH} through "
        "Client.enqueue's steps and Store's methods, RQ's side by RQ's own code (bench/scale.py); no worker ran. "
        "Bytes per job: the rise of used_memory over the stage ÷ its jobs (RQ's keys included); 'ours': MEMORY "
        "USAGE of resilient's own keys of ~200 of them; rq: plain rq filled with the same RQ calls. "
        f"Soak: {soak['how']}.")
    return result


# --- the fill, through the code that writes it --------------------------------------------------------
class _Queued:
    """A Store script run on a pipeline: the Store method builds its keys and arguments as it always does
    and sees `reply` (what it answers for a fresh job); `check` compares the real replies after the run."""

    def __init__(self, script: Any, pipe: Any, reply: Any, check: Callable[[Any], bool]) -> None:
        self.script, self.pipe, self.reply, self.check = script, pipe, reply, check

    def __call__(self, keys: Any = (), args: Any = (), client: Any = None) -> Any:
        self.script(keys=keys, args=args, client=self.pipe)
        return self.reply


def _pipelined(store: Store, pipe: Any) -> Store:
    """The same Store, its attempt scripts queued on `pipe` (a fresh job's first attempt is epoch 1)."""
    batch = copy.copy(store)
    # the epoch is the server's to hand out: the Attempt made from this stand-in reply is not used
    batch._begin = _Queued(store._begin, pipe, [b"OK", 1, 1], lambda r: r[0] == b"OK")  # type: ignore
    batch._save = _Queued(store._save, pipe, 1, lambda r: r == 1)  # type: ignore
    batch._finish = _Queued(store._finish, pipe, b"OK", lambda r: r == b"OK")  # type: ignore
    return batch


def _run(pipe: Any, checks: list[Callable[[Any], bool]]) -> list[Any]:
    """Run a pipeline; each reply with a check (None: no check) must pass it. The replies."""
    replies: list[Any] = pipe.execute()
    bad = [reply for reply, check in zip(replies, checks) if check is not None and not check(reply)]
    if bad:
        raise BenchError(f"{len(bad)} writes of the fill were refused, e.g. {bad[0]!r}")
    return replies


class _Pipe:
    """One pipeline of the fill: RQ's queue, our store bound to it, and the checks of each reply in order."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.pipe = client.connection.pipeline()
        self.pipe.multi()  # as Client.enqueue's (RQ's enqueue_job asks for one)
        self.store = _pipelined(client.store, self.pipe)
        self.queue = rq_queue(QUEUE, client.connection)
        self.checks: list[Any] = []

    def _mark(self, check: Callable[[Any], bool] | None = None) -> None:
        """Pad the checks up to the commands queued so far; `check` for the last one."""
        queued = len(self.pipe.command_stack)
        self.checks += [None] * (queued - len(self.checks))
        if check is not None:
            self.checks[-1] = check

    def create(self, push: bool) -> tuple[str, Job]:
        """Client.enqueue's writes for one job, without its WATCH (the ids are fresh): RQ's record, our
        record, and the queue entry when `push` (a job already taken off its queue has none)."""
        job_id, options, settings = uuid.uuid4().hex, SPEC.options, self.client.settings
        rq_job = self.queue.create_job(SPEC.name, args=(), kwargs={}, job_id=job_id, timeout=options.timeout,
                                       result_ttl=settings.result_ttl, failure_ttl=settings.result_ttl)
        self.queue._prepare_for_queue(rq_job)  # as Client.enqueue does
        self.store.create_job(job_id, SPEC.name, options.queue, options.max_attempts,
                              options.max_deaths_without_progress, pipeline=self.pipe,
                              call=encode({"args": [], "kwargs": {}, "timeout": options.timeout}),
                              max_mem_stuck=options.max_memory_deaths_at_same_checkpoint,
                              on_oom_queue=options.on_oom_queue, keep=options.keep,
                              rq_fields=rq_job.to_dict() if push else None)
        if not push:
            rq_job.save(pipeline=self.pipe)
        self._mark()
        return job_id, rq_job

    def begin(self, job_id: str, rq_job: Job, store: Store | None = None) -> tuple[int, Execution]:
        """What a worker writes as an attempt starts: RQ's started job and execution, and our BEGIN. The
        index of BEGIN's reply in the run's replies (its epoch is only known then)."""
        rq_job.prepare_for_execution(WORKER, pipeline=self.pipe)
        execution = Execution.create(rq_job, 600, pipeline=self.pipe, worker_name=WORKER)
        store = store or self.store
        store.begin_attempt(job_id, WORKER, HOST, **FACTS)
        self._mark(store._begin.check)  # type: ignore[attr-defined]
        return len(self.pipe.command_stack) - 1, execution

    def finish(self, attempt: Any, execution: Execution, rq_job: Job, checkpoint: bool = False) -> None:
        """A job that returned None (and saved once, if `checkpoint`): our SAVE and FINISH, then RQ's success
        as its worker writes it (the record, its result, the finished registry; the execution deleted)."""
        if checkpoint:
            self.store.save_checkpoint(attempt, encode({"position": 1}), done=1, total=1)
            self._mark(self.store._save.check)  # type: ignore[attr-defined]
        self.store.complete(attempt, encode_state(None, self.client.settings.max_checkpoint_bytes, "result"),
                            peak_rss=0)
        self._mark(self.store._finish.check)  # type: ignore[attr-defined]
        rq_success(rq_job, execution, self.client.settings.result_ttl, self.pipe)
        self._mark()

    def run(self) -> list[Any]:
        self._mark()
        replies = _run(self.pipe, self.checks)
        self.pipe.reset()
        self.pipe.multi()
        self.checks = []
        return replies


def rq_success(job: Job, execution: Execution, ttl: int, pipe: Any) -> None:
    """RQ's writes for a job that succeeded, as its worker's handle_job_success makes them (no dependents,
    no repeat): the record, its result and the finished registry, their TTL, the execution deleted."""
    job.ended_at = job.started_at
    job._handle_success(ttl, pipeline=pipe, worker_name=WORKER, execution_id=execution.id,
                        execution_started_at=execution.created_at, execution_ended_at=job.ended_at)
    job.cleanup(ttl, pipeline=pipe, remove_from_queue=False)
    execution.delete(job=job, pipeline=pipe)


def _batched(count: int, client: Client, one: Callable[[_Pipe], str]) -> list[str]:
    ids: list[str] = []
    batch = _Pipe(client)
    for i in range(count):
        ids.append(one(batch))
        if (i + 1) % BATCH == 0 or i + 1 == count:
            batch.run()
    return ids


def enqueue_many(client: Client, count: int) -> list[str]:
    """`count` jobs waiting in their queue, as Client.enqueue leaves them."""
    return _batched(count, client, lambda p: p.create(push=True)[0])


def finish_many(client: Client, count: int, checkpoint: bool = False) -> list[str]:
    """`count` jobs enqueued, begun and completed: per batch, one pipeline begins them, a second (with the
    epochs BEGIN handed out) finishes them."""
    ids: list[str] = []
    for start in range(0, count, BATCH):
        batch = _Pipe(client)
        begun = []
        for _ in range(min(BATCH, count - start)):
            job_id, rq_job = batch.create(push=False)
            begun.append((job_id, rq_job, *batch.begin(job_id, rq_job)))
        replies = batch.run()
        for job_id, rq_job, index, execution in begun:
            attempt = Attempt(job_id, int(replies[index][1]), int(replies[index][2]), None)
            batch.finish(attempt, execution, rq_job, checkpoint)
        batch.run()
        ids += [job_id for job_id, *_ in begun]
    return ids


def lease_many(client: Client, count: int, store: Store | None = None) -> list[str]:
    """`count` jobs begun and not finished: each holds a lease (with `store`'s lease time, if given)."""
    def one(p: _Pipe) -> str:
        job_id, rq_job = p.create(push=False)
        p.begin(job_id, rq_job, None if store is None else _pipelined(store, p.pipe))
        return job_id
    return _batched(count, client, one)


def _check_same_keys(env: Env, client: Client) -> None:
    """One job through Client.enqueue, one through the fill: the same keys, types, hash fields and TTLs."""
    real = SPEC.enqueue_call((), client=client).id
    ours = enqueue_many(client, 1)[0]
    shapes = [_shape(env.redis, job_id, other) for job_id, other in ((real, ours), (ours, real))]
    if shapes[0] != shapes[1]:
        differ = sorted(set(shapes[0].items()) ^ set(shapes[1].items()))
        raise BenchError(f"the fill no longer writes what Client.enqueue writes: {differ}")


def _shape(r: redis.Redis, job_id: str, other: str) -> dict[str, Any]:
    """Each key of this job (its id replaced) or of nobody's: type, hash fields, whether it expires; for
    the indexes, whether they hold the job."""
    shape: dict[str, Any] = {}
    for raw in r.scan_iter(count=1000):
        name = raw.decode()
        if other in name:
            continue
        kind = r.type(raw).decode()
        if job_id in name:
            fields = tuple(sorted(f.decode() for f in r.hkeys(raw))) if kind == "hash" else None
            shape[name.replace(job_id, "{id}")] = (kind, fields, r.ttl(raw) > 0)
        elif kind == "zset":
            shape[name] = (kind, r.zscore(raw, job_id) is not None)
        elif kind == "list":
            shape[name] = (kind, job_id.encode() in r.lrange(raw, 0, -1))
        else:
            shape[name] = (kind, r.ttl(raw) > 0)
    return shape


# --- what is measured --------------------------------------------------------------------------------
def _views(env: Env, client: Client, repeats: int = 5) -> dict[str, float]:
    """Median time of `status --json` (in process: report.status + json.dumps) and of one top refresh
    (top.refresh: the same data, drawn; rendered to text at 160×50)."""
    _quiet(env.redis)
    status_s, top_s, web_s = [], [], []
    rates = top.Rates()
    dashboard = serve_in_thread(client, WebOptions(port=0))
    try:
        for _ in range(repeats):
            web_s.append(_server_time(dashboard.url + "api/status"))
    finally:
        dashboard.stop()
    for _ in range(repeats):
        start = time.perf_counter()
        json.dumps(report.status(client.connection, client.store), indent=2)
        status_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        console = Console(file=io.StringIO(), width=160, height=50, force_terminal=True)
        console.print(top.refresh(client, rates))
        top_s.append(time.perf_counter() - start)
    return {"status": statistics.median(status_s), "top": statistics.median(top_s), "web": statistics.median(web_s),
            "status_all": status_s, "top_all": top_s, "web_all": web_s}  # type: ignore[dict-item]


def _server_time(url: str) -> float:
    """Seconds the dashboard spent on one request, as its Server-Timing header says (app;dur=<ms>)."""
    with urllib.request.urlopen(url, timeout=30) as reply:
        reply.read()
        timing = reply.headers["Server-Timing"]
    return float(timing.split("dur=")[1]) / 1000


def used_jobs(r: redis.Redis) -> int:
    """The jobs the server retains (our index of them)."""
    return int(r.zcard(keys.JOBS))


def _reaper_passes(env: Env, client: Client, repeats: int = 10, busy_repeats: int = 5) -> dict[str, Any]:
    """A reaper's pass with nothing expired (best of `repeats`), and with EXPIRED leases expired (best of
    `busy_repeats`: each time EXPIRED more jobs begun through Store with a 1 ms lease; each pass must claim
    them all). The best, not the median: the passes make the same calls whatever Redis holds, and the
    spread is the machine's (other processes, the server's AOF rewrite). The reaper watches a whole lease
    period first: it claims only after that (an outage is not a death), and passes more than half a period
    apart count as an outage; the period is 3 s, so that writing the expiring jobs between two passes never
    looks like one. The claimed jobs are requeued, as lost jobs are."""
    _quiet(env.redis)
    settings = Settings(lease_ttl=3.0)
    reaper = Reaper(client.connection, settings)
    idle: list[float] = []
    deadline = time.monotonic() + settings.lease_ttl + 0.2
    while time.monotonic() < deadline or len(idle) < repeats:
        start = time.perf_counter()
        claims = reaper.reap_once()
        idle.append(time.perf_counter() - start)
        if claims:
            raise BenchError(f"the reaper claimed {len(claims)} leases that had not expired")
        time.sleep(0.05)
    busy: list[float] = []
    commands: list[int] = []
    sent: list[int] = []
    for _ in range(busy_repeats):
        lease_many(client, EXPIRED, Store(client.connection, Settings(lease_ttl=0.001)))
        time.sleep(0.01)
        before = _work(env.redis)
        start = time.perf_counter()
        claims = reaper.reap_once()
        busy.append(time.perf_counter() - start)
        after = _work(env.redis)
        commands.append(after[0] - before[0] - 2)  # the two INFOs that counted them
        sent.append(after[1] - before[1])
        if len(claims) != EXPIRED:
            raise BenchError(f"the reaper claimed {len(claims)} of {EXPIRED} expired leases")
    return {"0": min(idle[-repeats:]), str(EXPIRED): min(busy), "commands": statistics.median(commands),
            "sent": statistics.median(sent), "0_all": idle[-repeats:], f"{EXPIRED}_all": busy,
            "commands_all": commands, "sent_all": sent}


def _work(r: redis.Redis) -> tuple[int, int]:
    """Commands the server has run (INFO commandstats: those the scripts call included) and the bytes it has
    sent (INFO stats: total_net_output_bytes; the INFO replies included)."""
    commands = sum(int(stat["calls"]) for stat in r.info("commandstats").values())
    return commands, int(r.info("stats")["total_net_output_bytes"])


def _reap_aim(reaps: dict[str, Any]) -> Aim:
    """Met when a pass on the full server makes the server do no more than on the empty one: no more commands,
    at most AIM_REAP_WORK× the bytes sent back. The time is shown too, not judged: it follows the machine
    (other processes) and the server's cost per command, which rises a little with ~700 MB of data."""
    empty, full = reaps["empty"], reaps["full"]
    met = full["commands"] <= empty["commands"] and full["sent"] <= AIM_REAP_WORK * empty["sent"]
    figure = "; ".join([
        f"with {EXPIRED} expired: {empty['commands']:.0f} → {full['commands']:.0f} commands, "
        f"{empty['sent'] / 1024:.0f} → {full['sent'] / 1024:.0f} KiB sent, "
        f"{_ms1(empty[str(EXPIRED)])} → {_ms1(full[str(EXPIRED)])}",
        f"0 expired: {_ms1(empty['0'])} → {_ms1(full['0'])}"])
    return Aim("9. scale", "the reaper's pass grows with what expired, not with what exists (empty → full server: "
               f"no more commands, ≤ {AIM_REAP_WORK:g}× the bytes sent)", figure, met)


def _quiet(r: redis.Redis) -> None:
    """Wait for the server's background work after a fill: an AOF rewrite (a fork writing the whole
    dataset) takes a core from what we time."""
    def idle() -> bool:
        info = r.info("persistence")
        return not (int(info["aof_rewrite_in_progress"]) or int(info["aof_rewrite_scheduled"]))
    wait_until(idle, 300, "the server's AOF rewrite", poll=0.1)


def _used_memory(r: redis.Redis) -> int:
    """used_memory once the server has freed what it frees in the background (lazyfree)."""
    wait_until(lambda: int(r.info("memory")["lazyfree_pending_objects"]) == 0, 30, "lazy frees")
    return int(r.info("memory")["used_memory"])


def _own_bytes(r: redis.Redis, ids: list[str]) -> float:
    """MEMORY USAGE of resilient's own keys of these jobs, per job."""
    with r.pipeline(transaction=False) as pipe:
        for job_id in ids:
            for key in (keys.job(job_id), keys.events(job_id), keys.checkpoint(job_id),
                        keys.checkpoint_history(job_id)):
                pipe.memory_usage(key, samples=0)
        sizes = pipe.execute()
    return sum(int(size or 0) for size in sizes) / max(1, len(ids))


def _plain_rq(env: Env, n: int, live: int) -> dict[str, int]:
    """used_memory for plain rq at the same stages, filled with the same RQ calls (pickle, rq's default)."""
    env.fresh()
    queue = Queue(RQ_QUEUE, connection=env.redis)
    used = {"empty": _used_memory(env.redis)}

    def batched(count: int, one: Callable[[Any], None]) -> None:
        for start in range(0, count, BATCH):
            with env.redis.pipeline() as pipe:
                pipe.multi()
                for _ in range(min(BATCH, count - start)):
                    one(pipe)
                pipe.execute()

    def create(pipe: Any, push: bool) -> Job:
        job = queue.create_job(jobs.noop, args=(None,), result_ttl=Settings().result_ttl)
        if push:
            queue.enqueue_job(job, pipeline=pipe)
        else:
            job.save(pipeline=pipe)
        return job

    def finished(pipe: Any) -> None:
        job = create(pipe, push=False)
        job.prepare_for_execution(WORKER, pipeline=pipe)
        execution = Execution.create(job, 600, pipeline=pipe, worker_name=WORKER)
        rq_success(job, execution, Settings().result_ttl, pipe)

    def started(pipe: Any) -> None:
        job = create(pipe, push=False)
        job.prepare_for_execution(WORKER, pipeline=pipe)
        Execution.create(job, 600, pipeline=pipe, worker_name=WORKER)

    for stage, count, one in (("queued", n, lambda p: create(p, push=True)), ("finished", n, finished),
                              ("leases", live, started)):
        batched(count, one)
        used[stage] = _used_memory(env.redis)
    return used


def _soak(env: Env, count: int, seconds_per_job: float) -> dict[str, Any]:
    """`count` jobs finished (each saved a checkpoint once), kept for seconds: twice what finishing them all
    takes here (from the fill's rate), so that none has expired when the last one ends. Past the retention, a
    PROMOTE pass (trims the jobs index), RQ's cleanup of its finished registry (as its workers' maintenance
    does), a SCAN of the keyspace (a key found expired is deleted on access, wherever active expiry has got
    to) and the background frees: then used_memory against its start."""
    keep = max(2, math.ceil(2 * 1.3 * count * seconds_per_job))  # 1.3: the checkpoint each job saves
    settings = Settings(keep=keep, keep_failed=keep + 1, result_ttl=keep, lease_ttl=60.0)
    env.fresh()
    client = Client(env.redis, settings)
    finish_many(client, 1, checkpoint=True)  # the scripts loaded, the connection's buffers grown ...
    env.redis.flushall()  # ... and its keys gone (FLUSHALL keeps the script cache)
    start = _used_memory(env.redis)
    keys_at_start = int(env.redis.dbsize())
    began = time.monotonic()
    finish_many(client, count, checkpoint=True)
    filled = time.monotonic()
    peak = _used_memory(env.redis)
    keys_at_peak = int(env.redis.dbsize())
    time.sleep(max(0.0, filled + keep + 2 - time.monotonic()))  # past the last job's retention (keep_failed)
    client.store.promote_due()
    FinishedJobRegistry(QUEUE, connection=env.redis).cleanup()
    for _ in env.redis.scan_iter(count=1000):
        pass
    wait_until(lambda: int(env.redis.dbsize()) <= keys_at_start, 30, "the soak's keys to expire")
    after = _used_memory(env.redis)
    return {"jobs": count, "keep": keep, "keep_failed": keep + 1, "start": start, "peak": peak, "after": after,
            "keys_at_peak": keys_at_peak, "fill_s": round(filled - began, 1),
            "waited_s": round(time.monotonic() - filled, 1),
            "how": (f"{count} jobs finished in {filled - began:.1f} s with keep {keep} s / keep_failed {keep + 1} s "
                    f"({keys_at_peak} keys at the peak); {keep + 2} s after the last: one promote_due() (trims the "
                    "jobs index), RQ's FinishedJobRegistry.cleanup() (its workers' maintenance), a SCAN of the "
                    "keyspace (a key found expired is deleted on access) and lazyfree_pending_objects = 0. "
                    "used_memory is the allocator's count of live bytes, so fragmentation (RSS) does not enter "
                    "it; the start is measured after one job warmed the scripts and the connection, then FLUSHALL")}


def _mib(size: float) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _ms1(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
