"""Terminal rendering of status and inspect data (rich)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from rich.console import Console
from rich.table import Table

from ..config import format_size

PIPE_WIDTH = 160  # columns when the output is not a terminal (a file, a pipe, a CI log): rich would use 80


def make_console() -> Console:
    """A terminal's own width; elsewhere wide enough that ids and table rows are not broken across lines."""
    console = Console()
    return console if console.is_terminal else Console(width=PIPE_WIDTH, soft_wrap=True)


console = make_console()
SILENT_AFTER = 10.0  # seconds without a published status before a worker is shown as probably gone
RESULT_SHOWN = 300  # characters of a completed job's result that `inspect` prints
SIZES = {"rss", "peak_rss", "ru_maxrss", "limit"}  # evidence fields in bytes, shown as MiB


def _when(ms: str | int | None) -> str:
    return datetime.fromtimestamp(int(ms) / 1000).strftime("%H:%M:%S.%f")[:-3] if ms else "-"


def _progress(job: dict[str, Any]) -> str:
    if job.get("total"):
        return f"{job['done']}/{job['total']} ({100 * job['done'] / job['total']:.0f}%)"
    return str(job.get("done", 0))


def more_running(data: dict[str, Any], rows: int) -> str | None:
    """The caption under a running-jobs table cut to `rows` (None when nothing was left out)."""
    more = data.get("running_count", len(data["running"])) - len(data["running"])
    if more > 0 and len(data["running"]) >= rows:
        return f"… and {more} more running (status --json lists them all)"
    return None


def state_text(worker: dict[str, Any]) -> str:
    """RQ's state, and, for a worker silent past SILENT_AFTER seconds, that it is probably gone."""
    silent = worker.get("silent_s")
    if silent is not None and silent > SILENT_AFTER:
        return f"{worker['state']}, silent {silent:.0f} s (dead?)"
    return str(worker["state"])


def memory_text(worker: dict[str, Any]) -> str:
    return usage_text(worker.get("rss"), worker.get("limit"))


def usage_text(rss: int | None, limit: int | None) -> str:
    if not limit or rss is None:
        return "-"
    return f"{format_size(rss)} / {format_size(limit)} ({100 * rss / limit:.0f}%)"


def group_memory_text(group: dict[str, Any]) -> str:
    """The group's usage against its limit, with its soft and hard lines."""
    return (f"{usage_text(group['usage'], group['limit'])}, soft {format_size(group['soft'])}, "
            f"hard {format_size(group['hard'])}")


def share_text(rss: int | None, limit: int) -> str:
    """A horse's RSS and the part of the group's limit it is."""
    return f"{format_size(rss)} ({100 * rss / limit:.0f}%)" if rss and limit else "-"


def shared(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The groups of more than one worker: a worker alone under its limit is all said in its own row."""
    return [group for group in groups if len(group["members"]) > 1]


def group_name(group: dict[str, Any]) -> str:
    return f"group {group['id'][:8]}"


def group_counts(group: dict[str, Any]) -> tuple[str, str]:
    """How many of its members run a job, and how many wait for headroom."""
    running = sum(1 for member in group["members"] if member["job"])
    waiting = len(group["waiting"])
    return f"{running} running", f"{waiting} job{'s' if waiting != 1 else ''}" if waiting else "-"


def waits_of(group: dict[str, Any]) -> dict[str, str]:
    """What each member waits for headroom for, by worker name: the job and its expected peak."""
    return {w["worker"]: w["job"] + (f" (~{format_size(w['expected'])})" if w["expected"] else "")
            for w in group["waiting"]}


STATUS_RUNNING_ROWS = 100  # running jobs `status` reads and prints (a table of 10k rows took 4.6 s to draw)


def print_status(data: dict[str, Any]) -> None:
    queues = Table("queue", "depth", title="Queues")
    for queue in data["queues"]:
        queues.add_row(queue["name"], str(queue["depth"]))
    workers = Table("worker", "host", "pid", "state", "queues", "job", "RSS under its limit", "level",
                    title="Workers", caption="under a shared limit: everything the limit covers (Limit groups)")
    for w in data["workers"]:
        workers.add_row(w["name"], w["hostname"], str(w["pid"]), state_text(w), ",".join(w["queues"]),
                        w["current_job"] or "-", memory_text(w), w["level"] or "-")
    running = Table("job", "name", "attempt", "progress", "checkpoint", "worker", "pid", title="Running jobs")
    for job in data["running"]:
        age = job["checkpoint_age_s"]
        running.add_row(job["id"], job["name"], str(job["attempt"]), _progress(job),
                        f"seq {job['checkpoint_seq']}" + (f", {age:.0f} s ago" if age is not None else ""),
                        job["worker"] or "-", str(job.get("pid") or "-"))
    running.caption = more_running(data, STATUS_RUNNING_ROWS)
    groups = shared(data["groups"])
    for table in (queues, workers, groups_table(groups), running) if groups else (queues, workers, running):
        console.print(table)
    console.print(f"parked jobs: {data['parked']}" + (" (see `resilient parked`)" if data["parked"] else ""))
    console.print(redis_text(data["redis"]))


def redis_text(redis: dict[str, Any]) -> str:
    """Redis: 12.3 MiB used of 1.00 GiB maxmemory (noeviction); 1234 jobs retained, ~1.1 MiB of keys (...)."""
    limit = f"of {format_size(redis['maxmemory'])} maxmemory" if redis["maxmemory"] else "(no maxmemory)"
    return (f"Redis: {format_size(redis['used_memory'])} used {limit} ({redis['maxmemory_policy']}); "
            f"{redis['retained_jobs']} jobs retained, ~{format_size(redis['retained_bytes'])} of their keys "
            f"(kept {_days(redis['keep'])} completed, {_days(redis['keep_failed'])} failed or parked)")


def _days(seconds: int) -> str:
    return f"{seconds / 86400:g} d" if seconds >= 86400 else f"{seconds} s"


def groups_table(groups: list[dict[str, Any]]) -> Table:
    """One line per limit group, then one per member: the job its horse runs and that horse's RSS, or the
    job it waits for headroom for."""
    table = Table("group / worker", "host", "pid", "job", "memory (RSS / limit)", "level", "waiting for headroom",
                  "step-asides", title="Limit groups (workers under one memory limit)")
    for group in groups:
        waits = waits_of(group)
        running, waiting = group_counts(group)
        table.add_row(group_name(group), group["host"], "-", running, group_memory_text(group), group["level"],
                      waiting, str(group["step_asides"]))
        for member in group["members"]:
            table.add_row(f" └ {member['worker']}", "", str(member["pid"]), member["job"] or "-",
                          share_text(member["horse_rss"], group["limit"]), "", waits.get(member["worker"], "-"), "")
        table.add_section()
    return table


def print_inspect(data: dict[str, Any], plot: bool = False) -> None:
    console.print(f"[bold]job {data['id']}[/bold]  {data['name']}  queue {data['queue']}")
    console.print(f"status: [bold]{data['status']}[/bold]   attempts: {data['attempt']}   deaths: {data['deaths']}"
                  f"   progress: {_progress(data)}   checkpoint seq {data['checkpoint_seq']}")
    if data.get("parked_reason"):
        console.print(f"[red]parked:[/red] {data['parked_reason']}")
    if data.get("error"):
        console.print(f"[red]failed:[/red] {data['error']}")
    if data.get("pid") and data["status"] == "running":
        console.print(f"running in process {data['pid']} on worker {data['worker']}")
    if data["status"] == "completed":
        shown = repr(data.get("result"))
        console.print(f"result: {shown[:RESULT_SHOWN]}" + (f" … ({len(shown)} characters; --json has it all)"
                                                           if len(shown) > RESULT_SHOWN else ""), markup=False)
    timeline = Table("when", "event", "details", title="Timeline")
    for event in data["timeline"]:
        timeline.add_row(_when(event.get("at")), event["type"], _event_details(event))
    console.print(timeline)
    if plot:
        print_memory_plot(data)
    if data["checkpoints"]:
        last = data["checkpoints"][-1]
        console.print(f"checkpoints kept: {len(data['checkpoints'])}, last seq {last['seq']} "
                      f"({last['bytes']} bytes) at {_when(last['saved_at'])}")


def _event_details(event: dict[str, Any]) -> str:
    kind = event["type"]
    if kind == "started":
        return f"attempt {event['attempt']} (epoch {event['epoch']}) on {event['worker']}@{event['host']}"
    if kind == "died":
        evidence = event.get("evidence") or {}
        lines = [f"{event['cause']} at checkpoint {event['seq']}: {event.get('explanation', '')}"]
        lines += [f"  {key}: {format_size(value) if key in SIZES and isinstance(value, int) else value}"
                  for key, value in sorted(evidence.items()) if key not in ("cause", "worker", "host", "attempt")]
        return "\n".join(lines)
    if kind == "requeued":
        return f"from checkpoint {event.get('from_seq')} ({event.get('reason', '')})"
    if kind == "parked":
        return cast(str, event.get("parked_reason", ""))
    if kind == "failed":
        return cast(str, event.get("error", ""))
    return ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("type", "at"))


def print_memory_plot(data: dict[str, Any]) -> None:
    from .plot import render

    memory = data["memory"]
    if not memory["limit"]:
        console.print("(no memory limit recorded for this job: it ran before limits were recorded)")
        return
    deaths = [e for e in data["timeline"] if e["type"] == "died"]
    console.print(f"RSS over time (limit {format_size(memory['limit'])} from {memory['limit_source']})")
    for line in render(memory["samples"], memory["limit"], memory["soft"], memory["hard"], deaths):
        console.print(line, markup=False, highlight=False)
