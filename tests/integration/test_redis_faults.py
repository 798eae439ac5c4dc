"""Workers ride out Redis trouble: dropped connections, CLIENT PAUSE, a server restart on the same data."""

from __future__ import annotations

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
