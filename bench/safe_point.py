"""Scenario 3: the cost of a safe point that does not persist: ctx.save() and one ctx.iterate step."""

from __future__ import annotations

import time
import uuid

from resilient import Client
from resilient.api.context import Context
from resilient.api.registry import JobOptions
from resilient.memory.governor import Governor, Thresholds
from resilient.memory.limits import discover_limit
from resilient.memory.probe import read_rss

from .harness import Env, median
from .report import Aim, Result, Row

AIM_SAVE_NS, AIM_ITERATE_NS = 2000, 1000


def run(env: Env) -> Result:
    n, reps = (20_000, 3) if env.quick else (200_000, 5)
    client = Client.from_url(env.url)
    save_ns, iterate_ns = [], []
    for _ in range(reps):
        save, iterate = measure(client, n)
        save_ns.append(save)
        iterate_ns.append(iterate)
    save, iterate = median(save_ns), median(iterate_ns)
    result = Result(raw={"calls_per_repeat": n, "repeats": reps, "save_ns": save_ns,
                         "iterate_ns": iterate_ns})
    result.rows += [
        Row("3. ctx.save() that does not persist (ns per call)", f"{save:.0f}", "no safe point"),
        Row("3. ctx.iterate, per item (ns)", f"{iterate:.0f}", "no safe point"),
    ]
    result.aims += [
        Aim("3. safe point", f"ctx.save() ≤ {AIM_SAVE_NS / 1000:g} µs", f"{save / 1000:.2f} µs",
            save <= AIM_SAVE_NS),
        Aim("3. safe point", f"ctx.iterate ≤ {AIM_ITERATE_NS / 1000:g} µs per item",
            f"{iterate / 1000:.2f} µs", iterate <= AIM_ITERATE_NS, "" if iterate <= AIM_ITERATE_NS else
            "each step is a generator resume plus a full ctx.save(): msgpack of {'position': n}, a clock"),
    ]
    return result


def measure(client: Client, n: int) -> tuple[float, float]:
    """ns per call of ctx.save(state) and per ctx.iterate step, with a running governor as in a horse."""
    governor = Governor(discover_limit(), Thresholds(), read_rss)
    governor.start()
    try:
        job_id = f"bench-safe-point-{uuid.uuid4().hex}"
        client.store.create_job(job_id, "bench.safe_point", "bench", 10)
        _, attempt = client.store.begin_attempt(job_id, "bench", "local")
        assert not isinstance(attempt, str)
        ctx = Context(attempt, client.store, JobOptions(checkpoint_every=3600), None,
                      client.settings.max_checkpoint_bytes, governor=governor)
        state = {"offset": 123456, "rows": 987}
        start = time.perf_counter_ns()
        for _ in range(n):
            ctx.save(state)
        save_ns = (time.perf_counter_ns() - start) / n
        start = time.perf_counter_ns()
        for _ in ctx.iterate(range(n)):
            pass
        iterate_ns = (time.perf_counter_ns() - start) / n
        return save_ns, iterate_ns
    finally:
        governor.stop()
