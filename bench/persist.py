"""Scenario 2: ctx.save(force=True) against msgpack encoding plus a raw SET of the same state, on the same
connection (the least any store of a checkpoint can do); a raw SET of ready bytes and rq's job.meta as references."""

from __future__ import annotations

import time
import uuid
from typing import Any

from rq import Queue

from resilient import Client
from resilient.api.context import Context
from resilient.api.registry import JobOptions
from resilient.storage.codec import encode

from . import jobs
from .harness import Env, median, percentile
from .report import Aim, Result, Row, ratio

AIM = 1.3
SIZES = {"1 KiB": 1024, "100 KiB": 100 * 1024}
WARM_UP = 50


def run(env: Env) -> Result:
    env.fresh()
    client = Client.from_url(env.url)
    rq_job = Queue("rq-persist", connection=env.redis).enqueue(jobs.noop, None)  # stands in for a running job
    result = Result()
    for label, size in SIZES.items():
        n = 200 if env.quick else (3000 if size <= 4096 else 1000)
        state = sized_state(size)
        data = encode(state)
        ctx = _context(client)
        raw_key = f"bench:raw:{uuid.uuid4().hex}"
        samples: dict[str, list[float]] = {name: [] for name in ("ctx.save", "raw SET", "rq job.meta",
                                                                  "encode only", "encode + SET")}
        for i in range(WARM_UP + n):  # interleaved call by call: drift hits all three alike
            timings = (
                _timed(ctx.save, state, True),
                _timed(client.connection.set, raw_key, data),
                _timed(_save_meta, rq_job, state),
                _timed(encode, state),
                _timed(_encode_and_set, client.connection, raw_key, state),
            )
            if i >= WARM_UP:
                for name, value in zip(samples, timings):
                    samples[name].append(value)
        p50 = {k: median(v) for k, v in samples.items()}
        p99 = {k: percentile(v, 99) for k, v in samples.items()}
        result.raw[label] = {"encoded_bytes": len(data), "calls": n, "p50_us": p50, "p99_us": p99,
                             "samples_us": samples}
        res, floor, raw, meta = p50["ctx.save"], p50["encode + SET"], p50["raw SET"], p50["rq job.meta"]
        result.rows += [
            Row(f"2. persist {label} state, p50 / p99 (rq column: msgpack encode + raw SET of the same state)",
                f"{res:.0f} / {p99['ctx.save']:.0f} µs", f"{floor:.0f} / {p99['encode + SET']:.0f} µs",
                ratio(res, floor)),
            Row(f"2. persist {label}: raw SET of ready bytes, p50 / p99; reference", "",
                f"{raw:.0f} / {p99['raw SET']:.0f} µs", ratio(res, raw)),
            Row(f"2. persist {label}: rq job.meta + save_meta() (pickle), p50 / p99; reference", "",
                f"{meta:.0f} / {p99['rq job.meta']:.0f} µs", ratio(res, meta)),
        ]
        met = res <= AIM * floor
        result.aims.append(Aim(f"2. persist {label}", f"p50 ≤ {AIM}× msgpack encode + raw SET", ratio(res, floor), met,
                               "" if met else _why(p50, len(data))))
    return result


def sized_state(size: int) -> dict[str, Any]:
    """A checkpoint-like state (a position and rows of mixed values) whose msgpack is about `size` bytes."""
    rows: list[list[Any]] = []
    state = {"position": 123456, "rows": rows}
    while len(encode(state)) < size:
        i = len(rows)
        rows.append([i, f"name-{i}", i * 0.5])
    return state


def _context(client: Client) -> Context:
    job_id = f"bench-persist-{uuid.uuid4().hex}"
    client.store.create_job(job_id, "bench.persist", "bench", 10)
    _, attempt = client.store.begin_attempt(job_id, "bench", "local")
    assert not isinstance(attempt, str)
    return Context(attempt, client.store, JobOptions(checkpoint_every=3600), None,
                   client.settings.max_checkpoint_bytes)


def _encode_and_set(connection: Any, key: str, state: Any) -> None:
    connection.set(key, encode(state))


def _save_meta(job: Any, state: Any) -> None:
    job.meta["checkpoint"] = state
    job.save_meta()


def _timed(fn: Any, *args: Any) -> float:
    start = time.perf_counter_ns()
    fn(*args)
    return (time.perf_counter_ns() - start) / 1000


def _why(p50: dict[str, float], encoded: int) -> str:
    encode_us = p50["encode only"]
    script_us = p50["ctx.save"] - encode_us
    return (f"ctx.save = msgpack encoding {encode_us:.0f} µs (the raw SET is handed the bytes) + one "
            f"fenced Lua script {script_us:.0f} µs that stores the {encoded} B once (the checkpoint hash) and "
            f"notes its size in the history, against {p50['encode + SET']:.0f} µs for encoding and one SET")
