"""`resilient top`: a live view of queues, workers (memory against their limit), running jobs, deaths."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from ..api.client import Client
from ..model import DEFAULT_THRESHOLDS
from . import report
from .views import (
    group_counts,
    group_name,
    memory_text,
    more_running,
    share_text,
    shared,
    usage_text,
    waits_of,
)

BAR = 20
RUNNING_ROWS = 30  # running jobs drawn (and read) per refresh; the table says how many more there are


class Rates:
    """Per-second rates from the difference between two snapshots."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}

    def rate(self, key: str, value: float, now: float) -> float | None:
        previous = self._last.get(key)
        self._last[key] = (now, value)
        if previous is None or now <= previous[0]:
            return None
        return max(0.0, (value - previous[1]) / (now - previous[0]))


def memory_bar(rss: int | None, limit: int | None, soft: float = DEFAULT_THRESHOLDS.soft,
               hard: float = DEFAULT_THRESHOLDS.hard) -> str:
    """[█████░░░░░░░░|░░|░░░] with the soft and hard lines marked '|'."""
    if not rss or not limit:
        return "-"
    filled = min(BAR, round(rss / limit * BAR))
    cells = ["█" if i < filled else "░" for i in range(BAR)]
    for line in (soft, hard):
        position = min(BAR - 1, round(line * BAR))
        cells[position] = "|" if position >= filled else "┃"
    return "[" + "".join(cells) + "]"


def progress_bar(done: int, total: int | None) -> str:
    if not total:
        return f"{done} items"
    filled = min(BAR, round(done / total * BAR))
    return "[" + "█" * filled + "░" * (BAR - filled) + f"] {done}/{total}"


def render(data: dict[str, Any], rates: Rates, now: float) -> Group:
    queues = Table("queue", "depth", "delayed", "done/s", title="Queues", title_justify="left")
    for q in data["queues"]:
        rate = rates.rate(f"q:{q['name']}", q["finished"], now)
        queues.add_row(q["name"], str(q["depth"]), str(q["delayed"]), "-" if rate is None else f"{rate:.1f}")
    workers = Table("worker", "host", "pid", "memory vs limit (| soft, hard)", "level", "job", title="Workers",
                    title_justify="left")
    for w in data["workers"]:
        workers.add_row(w["name"][:12], w["hostname"], str(w["pid"]), f"{memory_bar(w['rss'], w['limit'], w['soft'] or DEFAULT_THRESHOLDS.soft, w['hard'] or DEFAULT_THRESHOLDS.hard)} "
                        f"{memory_text(w)}", w["level"] or "-", (w["current_job"] or "-")[:12])
    jobs = Table("job", "name", "attempt", "progress", "items/s", "ETA", "checkpoint age", title="Running jobs",
                 title_justify="left")
    for job in data["running"]:
        rate = rates.rate(f"j:{job['id']}:{job['attempt']}", job["done"], now)
        eta = (job["total"] - job["done"]) / rate if rate and job["total"] else None
        age = job["checkpoint_age_s"]
        jobs.add_row(job["id"][:12], job["name"].rsplit(".", 1)[-1], str(job["attempt"]),
                     progress_bar(job["done"], job["total"]), "-" if rate is None else f"{rate:.1f}",
                     "-" if eta is None else f"{eta:.0f} s", "-" if age is None else f"{age:.0f} s")
    jobs.caption, jobs.caption_justify = more_running(data, RUNNING_ROWS), "left"
    deaths = Table("when", "cause", "job", title="Last deaths", title_justify="left")
    for death in data["recent_deaths"]:
        deaths.add_row(datetime.fromtimestamp(int(death["at"]) / 1000).strftime("%H:%M:%S"), death["cause"],
                       death["job_id"][:12])
    footer = f"parked: {data['parked']}   {datetime.now():%H:%M:%S}   (Ctrl+C quits)"
    groups = shared(data["groups"])
    tables = [queues, workers, groups_table(groups)] if groups else [queues, workers]
    return Group(*tables, jobs, deaths, footer)


def groups_table(groups: list[dict[str, Any]]) -> Table:
    """One line per limit group (its usage against the shared limit), then one per member: its horse's
    share of that limit on the same scale, and the job it runs or waits for headroom for."""
    table = Table("group / worker", "memory vs shared limit (| soft, hard)", "level", "job", "waits for",
                  "step-asides", title="Limit groups", title_justify="left")
    for group in groups:
        limit, usage = group["limit"], group["usage"]
        lines = group["soft"] / limit, group["hard"] / limit
        waits = waits_of(group)
        running, waiting = group_counts(group)
        table.add_row(group_name(group), f"{memory_bar(usage, limit, *lines)} {usage_text(usage, limit)}",
                      group["level"], running, waiting, str(group["step_asides"]))
        for member in group["members"]:
            rss = member["horse_rss"]
            share = f"{memory_bar(rss, limit, *lines)} {share_text(rss, limit)}" if rss else "-"
            table.add_row(f"└ {member['worker'][:10]}", share, "", (member["job"] or "-")[:12],
                          waits.get(member["worker"], "-"), "")
        table.add_section()
    return table


def refresh(client: Client, rates: Rates) -> Group:
    """One refresh: what `status` reads (a screenful of the running jobs), drawn."""
    data = report.status(client.connection, client.store, running_limit=RUNNING_ROWS)
    return render(data, rates, time.monotonic())


def run_top(client: Client, interval: float = 1.0, count: int | None = None) -> None:
    """Refresh every `interval` seconds until Ctrl+C (or `count` refreshes)."""
    rates = Rates()
    console = Console()
    refreshes = 0
    with Live(console=console, auto_refresh=False, screen=False) as live:
        try:
            while count is None or refreshes < count:
                live.update(refresh(client, rates), refresh=True)
                refreshes += 1
                if count is None or refreshes < count:
                    time.sleep(interval)
        except KeyboardInterrupt:
            pass
