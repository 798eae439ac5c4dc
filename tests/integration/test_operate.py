"""What operators rely on: health probes and one-line-per-event logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest
import testjobs
from conftest import ROOT, WorkerProcess, wait_until

from resilient import Client
from resilient.storage.server import ensure_server, stop_server


def _health(probe: str, url: str, health_dir) -> subprocess.CompletedProcess:
    env = {**os.environ, "REDIS_URL": url, "RESILIENT_HEALTH_DIR": str(health_dir)}
    return subprocess.run([sys.executable, "-m", "resilient", "health", probe], env=env, capture_output=True,
                          text=True, timeout=30)


@pytest.fixture
def own_server(tmp_path):
    info = ensure_server(tmp_path / "redis")
    yield info
    stop_server(info.data_dir)


def test_live_needs_no_redis_and_ready_does(own_server, tmp_path, monkeypatch):
    """--live passes while Redis is down (the worker still ticks); --ready fails then, saying why."""
    health_dir = tmp_path / "health"
    monkeypatch.setenv("RESILIENT_HEALTH_DIR", str(health_dir))
    assert _health("--live", own_server.url, health_dir).returncode == 1  # nothing runs yet
    idle = _health("--ready", own_server.url, health_dir)
    assert idle.returncode == 1 and "no worker or supervisor here has ticked" in idle.stderr
    worker = WorkerProcess(own_server.url, ["testjobs"], tmp_path)
    try:
        # ready only once the worker itself ticks and is registered: stopping Redis now cannot race its start
        wait_until(lambda: _health("--ready", own_server.url, health_dir).returncode == 0, what="ready")
        stop_server(own_server.data_dir)
        live = _health("--live", own_server.url, health_dir)
        assert live.returncode == 0, live.stderr
        ready = _health("--ready", own_server.url, health_dir)
        assert ready.returncode == 1 and "connection refused" in ready.stderr
        assert len(ready.stderr.strip().splitlines()) == 1
    finally:
        worker.stop()


def test_ready_counts_only_the_local_processes_of_its_own_redis(own_server, redis_url, tmp_path, monkeypatch):
    """Two servers on one host, a worker for each, one health dir: --ready for either server passes; the
    other server's worker, not registered there, is not held against it."""
    health_dir = tmp_path / "health"
    monkeypatch.setenv("RESILIENT_HEALTH_DIR", str(health_dir))
    workers = [WorkerProcess(url, ["testjobs"], tmp_path) for url in (own_server.url, redis_url)]
    try:
        for url in (own_server.url, redis_url):
            wait_until(lambda: _health("--ready", url, health_dir).returncode == 0, what=f"ready for {url}")
    finally:
        for worker in workers:
            worker.stop()


def _take_down(server) -> None:
    """Stop the server but keep its record, so that ensure_server brings it back on the same port."""
    os.kill(server.pid, signal.SIGTERM)
    wait_until(lambda: not psutil.pid_exists(server.pid), what="the server to exit")


def _wait_live_not_ready(process, url: str, health_dir) -> str:
    """The process started while Redis is down: it stays up and live; --ready fails with one line."""
    wait_until(lambda: _health("--live", url, health_dir).returncode == 0, what="the process to tick")
    ready = _health("--ready", url, health_dir)
    assert ready.returncode == 1 and len(ready.stderr.strip().splitlines()) == 1
    assert process.poll() is None, "it exited instead of waiting for Redis"
    return ready.stderr


def test_worker_started_before_redis_waits_for_it(own_server, tmp_path, monkeypatch):
    """compose/k8s start the worker and Redis together: the worker waits (live, not ready), then works."""
    health_dir = tmp_path / "health"
    monkeypatch.setenv("RESILIENT_HEALTH_DIR", str(health_dir))
    _take_down(own_server)
    worker = WorkerProcess(own_server.url, ["testjobs"], tmp_path)
    try:
        assert "connection refused" in _wait_live_not_ready(worker.proc, own_server.url, health_dir)
        restarted = ensure_server(own_server.data_dir)
        assert restarted.url == own_server.url, "the server came back on another port"
        wait_until(lambda: _health("--ready", own_server.url, health_dir).returncode == 0, what="ready")
        client = Client.from_url(own_server.url)
        assert testjobs.count_items.enqueue_call((own_server.url, 3, 0.0), client=client).result(timeout=30) == 3
        assert "waiting for it" in worker.output()
    finally:
        worker.stop()
    assert worker.proc.returncode == 0


def test_supervisor_started_before_redis_waits_for_it(own_server, tmp_path, monkeypatch):
    """The same for `supervisor --workers 1`: it waits, then starts its worker, which registers."""
    health_dir = tmp_path / "health"
    monkeypatch.setenv("RESILIENT_HEALTH_DIR", str(health_dir))
    _take_down(own_server)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}", "REDIS_URL": own_server.url}
    supervisor = subprocess.Popen([sys.executable, "-m", "resilient", "supervisor", "--workers", "1", "testjobs"],
                                  env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_live_not_ready(supervisor, own_server.url, health_dir)
        ensure_server(own_server.data_dir)
        # the supervisor alone is ready first; it starts its worker once it has reached Redis
        wait_until(lambda: "1 local worker(s) registered" in _health("--ready", own_server.url, health_dir).stdout,
                   what="ready with its worker")
    finally:
        supervisor.terminate()
        assert supervisor.wait(30) == 0


def test_logs_are_json_lines_with_job_context(client, start_worker, redis_url):
    """Not on a terminal, every log line is JSON; a job's lines carry job_id, attempt, epoch, queue, worker."""
    worker = start_worker()
    handle = testjobs.raises.enqueue_call(("boom",), client=client)
    wait_until(lambda: handle.status == "failed", what="the job to fail")
    worker.stop()
    lines = [json.loads(line) for line in worker.output().splitlines() if line.strip()]
    assert lines, "no log lines"
    job_lines = [line for line in lines if line.get("job_id") == handle.id]
    assert job_lines and all({"attempt", "epoch", "queue", "worker"} <= set(line) for line in job_lines)
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)


def test_top_shows_a_running_jobs_progress_under_a_terminal(client, start_worker, redis_url):
    """`resilient top` under a pseudo-terminal refreshes a few times and shows the running job's progress."""
    import pty
    import re

    start_worker()
    handle = testjobs.iterate_items.enqueue_call((redis_url, 400, 0.02), client=client)
    wait_until(lambda: client.store.job_fields(handle.id).get("done", "0") != "0", what="the job running")
    env = {**os.environ, "COLUMNS": "160", "LINES": "60", "TERM": "xterm"}
    main, secondary = pty.openpty()
    top = subprocess.Popen([sys.executable, "-m", "resilient", "--redis-url", redis_url, "top", "--count", "3",
                            "--interval", "0.3"], stdin=secondary, stdout=secondary, stderr=secondary, env=env)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed: top has exited
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert top.wait(30) == 0
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    assert "Running jobs" in screen and handle.id[:12] in screen
    assert re.search(r"\] \d+/400", screen), "no progress bar for the job"
    assert "Workers" in screen and "Last deaths" in screen


def test_rqs_own_tools_see_the_worker_busy_during_a_job_and_idle_after(client, start_worker, redis_url, redis_client):
    """`rq info` reads a worker's state from its RQ record: busy while a job runs, idle once it has ended (the
    worker sends that mark with its next beat, within half a second, not as a round trip of its own)."""
    from rq import Worker

    def state() -> str | None:
        workers = Worker.all(connection=redis_client)
        return workers[0].get_state() if workers else None

    start_worker()
    gate = [redis_url, "state-test-gate"]
    handle = testjobs.steady.enqueue_call((1, 0, 0.01, gate), client=client)
    wait_until(lambda: state() == "busy", what="rq to see the worker busy")
    redis_client.set("state-test-gate", 1)
    wait_until(lambda: handle.status == "completed", what="the job to complete")
    wait_until(lambda: state() == "idle", timeout=5, what="rq to see the worker idle")
