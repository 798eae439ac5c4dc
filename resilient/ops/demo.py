"""`resilient demo`: a job killed mid-run on purpose comes back from its checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from ..api.client import Client
from ..api.handle import JobHandle
from ..api.registry import import_job_modules, lookup
from ..config import Settings
from ..errors import ConfigError
from ..model import FINAL_STATUSES, Death
from ..runtime.deaths import describe
from .views import make_console

console = make_console()
DEMO_JOB = "examples.squares.sum_squares"


def run_demo(settings: Settings, items: int = 60) -> int:
    """Start server + worker, enqueue, SIGKILL the horse at ~40 %, watch it resume, check the result."""
    import_job_modules(["examples.squares"])
    client = Client.from_settings(settings)
    console.print(f"[bold]1.[/bold] Redis: {client.connection.connection_pool.connection_kwargs.get('host')}:"
                  f"{client.connection.connection_pool.connection_kwargs.get('port')} "
                  f"({'embedded, under ' + str(settings.data_dir) if not settings.redis_url else 'REDIS_URL'})")
    worker = _start_worker(settings)
    try:
        handle = lookup(DEMO_JOB).enqueue_call((items,), client=client)
        console.print(f"[bold]2.[/bold] enqueued {DEMO_JOB}({items}) as job {handle.id}; worker pid {worker.pid}")
        _watch(client, handle, items, worker)
        return _summary(client, handle, items)
    finally:
        _stop_worker(worker)
        console.print("The embedded server keeps running for other commands; `resilient server stop` stops it.")


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    log = open(settings.data_dir / "demo-worker.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "resilient", "--data-dir", str(settings.data_dir), "worker",
                             "examples.squares", "--name", f"demo-{os.getpid()}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


def _watch(client: Client, handle: JobHandle, items: int, worker: subprocess.Popen[bytes]) -> None:
    kill_at = max(2, int(items * 0.4))
    killed = False
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("attempt 1", total=items)
        deadline = time.monotonic() + 30 + items * 0.5
        while handle.status not in FINAL_STATUSES:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise ConfigError(f"the demo worker stopped or stalled; see {client.settings.data_dir}/demo-worker.log")
            fields = client.store.job_fields(handle.id)
            done = int(fields.get("done", 0))
            progress.update(task, completed=done, description=f"attempt {fields.get('attempt', 1)}")
            if not killed and done >= kill_at and fields.get("horse_pid"):
                os.kill(int(fields["horse_pid"]), signal.SIGKILL)
                killed = True
                progress.console.print(f"[red]3. SIGKILL[/red] to the job's process (pid {fields['horse_pid']}) at "
                                       f"item {done}; last checkpoint seq {fields.get('seq')}")
            time.sleep(0.1)
        progress.update(task, completed=items)


def _summary(client: Client, handle: JobHandle, items: int) -> int:
    expected = sum(i * i for i in range(items))
    events = handle.events()
    deaths = [e for e in events if e["type"] == "died"]
    starts = [e for e in events if e["type"] == "started"]
    result = handle.result(timeout=5)
    redone = _items_redone(events)
    console.print("[bold]4.[/bold] summary")
    console.print(f"   attempts: {len(starts)}")
    for death in deaths:
        console.print(f"   death: {death['cause']} at checkpoint {death['seq']}: "
                      f"{describe(Death(death['cause'], death.get('evidence') or {}))}")
    console.print(f"   items redone after the kill: {redone}")
    ok = result == expected
    console.print(f"   result {result} {'==' if ok else '!='} uninterrupted computation {expected}: "
                  f"[{'green' if ok else 'red'}]{'OK' if ok else 'WRONG'}[/]")
    return 0 if ok and len(deaths) >= 1 else 1


def _items_redone(events: list[dict[str, Any]]) -> int:
    """Items done before the kill but after the checkpoint the job resumed from (progress is written
    4 times a second, so this can be short by the items of the last quarter second)."""
    deaths = [e for e in events if e["type"] == "died"]
    if not deaths:
        return 0
    evidence = deaths[0].get("evidence") or {}
    return max(0, int(evidence.get("done", 0)) - int(evidence.get("checkpoint_done", 0)))
