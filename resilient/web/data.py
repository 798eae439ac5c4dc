"""What the dashboard shows, as JSON-ready data: `status --json` and `inspect --json` (ops/report.py), with
the few things a page adds on top (the marks of the memory chart, deaths counted by cause)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from ..api.client import Client
from ..model import PREEMPTIONS
from ..ops import report
from ..ops.plot import death_mark
from ..runtime.deaths import peak_rss

OVERVIEW_RUNNING = 100  # running jobs the overview lists (it counts them all, as `status` does)
DEATHS_WINDOW = 200  # the deaths counted by cause: what the deaths stream keeps


def overview(client: Client, running_limit: int | None = OVERVIEW_RUNNING) -> dict[str, Any]:
    """`status --json` (a screenful of running jobs unless `running_limit` is None), the recent deaths
    counted by cause, and the time it was read (for rates between two reads)."""
    data = report.status(client.connection, client.store, running_limit=running_limit)
    causes = Counter(death["cause"] for death in client.store.recent_deaths(DEATHS_WINDOW))
    return {**data, "deaths_by_cause": dict(causes.most_common()), "at": time.time()}


def job(client: Client, job_id: str) -> dict[str, Any]:
    """`inspect --json`, with the marks `inspect --plot` draws: one per death (its letter, its peak RSS,
    whether it was a step-aside); {} for an unknown job."""
    data = report.inspect(client.store, job_id)
    if data:
        data["memory"]["marks"] = chart_marks(data["timeline"])
        data["at"] = time.time()
    return data


def chart_marks(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"at": int(event["at"]), "cause": event["cause"], "mark": death_mark(event["cause"]),
             "peak_rss": peak_rss(event.get("evidence") or {}), "step_aside": event["cause"] in PREEMPTIONS}
            for event in timeline if event.get("type") == "died"]


def held(client: Client) -> dict[str, Any]:
    """Parked and delayed jobs."""
    return report.held(client.connection, client.store)


def worker(client: Client, name: str) -> dict[str, Any]:
    """One worker as `status` shows it, its limit group, and the job it runs; {} for an unknown worker."""
    data = report.status(client.connection, client.store, running_limit=1)
    found = next((w for w in data["workers"] if w["name"] == name), None)
    if found is None:
        return {}
    group = next((g for g in data["groups"] if any(m["worker"] == name for m in g["members"])), None)
    current = report.job_summary(client.store, found["current_job"]) if found["current_job"] else None
    return {**found, "limit_group": group, "job": current or None, "at": time.time()}
