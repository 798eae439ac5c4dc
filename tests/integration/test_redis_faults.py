"""Workers ride out Redis trouble: dropped connections, CLIENT PAUSE, a server restart on the same data."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import redis
import testjobs
from conftest import WorkerProcess, wait_until

from resilient import Client
from resilient.storage.server import ensure_server, stop_server


@pytest.fixture
def own_server(tmp_path):
    """A server of this test's own: it gets restarted, which the shared one must not be."""
    info = ensure_server(tmp_path / "redis")
    yield info
    stop_server(info.data_dir)


def test_batch_survives_dropped_connections_pause_and_restart(own_server, tmp_path):
    """Mid-batch: every client connection dropped, the server paused, then restarted on its AOF: every job
    completes with the right result, none is lost."""
    url = own_server.url
    workers = [WorkerProcess(url, ["testjobs"], tmp_path) for _ in range(2)]
    try:
        client = Client.from_url(url)
        handles = [testjobs.quiet_sum.enqueue_call((60, 0.02), client=client) for _ in range(8)]
        admin = redis.Redis.from_url(url)
        wait_until(lambda: sum(h.status == "completed" for h in handles) >= 1, what="the batch to be under way")

        admin.client_kill_filter(_type="normal", skipme=True)
        admin.client_pause(1000)
        wait_until(lambda: sum(h.status == "completed" for h in handles) >= 3, timeout=30, what="more progress")

        admin.shutdown(nosave=False)  # AOF is flushed on a clean shutdown
        admin.close()
        assert ensure_server(own_server.data_dir).url == url, "the server must come back where workers look"

        assert [h.result(timeout=90) for h in handles] == [sum(range(60))] * 8
        assert all(worker.proc.poll() is None for worker in workers), "a worker gave up on Redis"
        assert sum(h.attempts for h in handles) == 8, "a job was restarted although nothing died"
    finally:
        for worker in workers:
            worker.stop()


@pytest.mark.parametrize("trouble", ["stopped", "paused"])
def test_sigterm_ends_an_idle_worker_at_once_while_redis_is_away(own_server, tmp_path, trouble):
    """An idle worker whose Redis is stopped (or answers nothing) exits 0 within 2 s of SIGTERM, well
    inside a container's stop grace, instead of retrying its farewell writes for half a minute."""
    url = own_server.url
    worker = WorkerProcess(url, ["testjobs"], tmp_path)
    try:
        admin = redis.Redis.from_url(url)
        # its status, written from its work loop: RQ's signal handlers are in place by then
        wait_until(lambda: list(admin.scan_iter("resilient:worker:*")), what="the worker in its work loop")
        if trouble == "stopped":
            admin.close()
            stop_server(own_server.data_dir)
        else:
            admin.client_pause(60_000, all=False)  # writes (BLMOVE, beats) wait; CLIENT LIST answers
        wait_until(lambda: "next try in" in worker.output() or "could not connect" in worker.output()
                   if trouble == "stopped" else True, timeout=30, what="the worker to notice the outage")
        if trouble == "paused":
            wait_until(lambda: any("b" in c["flags"] for c in admin.client_list()), what="the worker to block on a reply")
        started = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        try:
            code = worker.proc.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker ignored SIGTERM for 10 s with Redis {trouble}:\n{worker.output()[-2000:]}")
        took = time.monotonic() - started
        assert code == 0, worker.output()[-2000:]
        assert took < 2.0, f"SIGTERM took {took:.1f} s to end the worker with Redis {trouble}"
    finally:
        worker.stop()
        if trouble == "paused":
            redis.Redis.from_url(url).client_unpause()
