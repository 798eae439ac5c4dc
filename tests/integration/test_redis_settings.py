"""A Redis set up to lose jobs is named at start (worker log, health --ready); a Redis near its maxmemory
refuses new jobs with one clear line instead of failing running ones."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import testjobs
from conftest import ROOT, wait_until

from resilient import Client
from resilient.errors import RedisFull
from resilient.storage import redis_settings


@pytest.fixture
def server_config(redis_client):
    """Change the test server's settings; put every one back at the end (the server is shared)."""
    before: dict[str, str] = {}

    def change(**values: str) -> None:
        for name, value in values.items():
            name = name.replace("_", "-")
            before.setdefault(name, redis_client.config_get(name)[name])
            redis_client.config_set(name, value)

    yield change
    for name, value in before.items():
        redis_client.config_set(name, value)


def test_the_embedded_server_is_set_up_to_keep_jobs(redis_client):
    assert redis_settings.warnings(redis_client) == []


def test_eviction_and_no_persistence_are_named_once_at_start(server_config, start_worker, redis_client):
    server_config(maxmemory_policy="allkeys-lru", appendonly="no", save="")
    found = redis_settings.warnings(redis_client)
    assert len(found) == 2
    assert "maxmemory-policy allkeys-lru" in found[0] and "set maxmemory-policy noeviction" in found[0]
    assert "a restart loses every job" in found[1]
    worker = start_worker()
    wait_until(lambda: "noeviction" in worker.output() and "appendonly yes" in worker.output(), what="warnings")
    assert worker.output().count("maxmemory-policy allkeys-lru") == 1


def test_ready_reports_the_warning(server_config, start_worker, redis_url, tmp_path, monkeypatch):
    health_dir = tmp_path / "health"
    monkeypatch.setenv("RESILIENT_HEALTH_DIR", str(health_dir))
    server_config(maxmemory_policy="volatile-lru")
    start_worker()
    env = {**os.environ, "REDIS_URL": redis_url}

    def ready() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "resilient", "health", "--ready"], env=env,
                              capture_output=True, text=True, timeout=30)

    probe = wait_until(lambda: (run := ready()).returncode == 0 and run, what="ready")
    assert "warning: Redis evicts keys" in probe.stdout + probe.stderr


def test_enqueue_is_refused_above_the_high_water_mark(server_config, redis_client, redis_url):
    used = redis_settings.memory_use(redis_client).used
    server_config(maxmemory=str(int(used / 0.95)))  # ~95 % full, above the 90 % mark
    client = Client.from_url(redis_url)
    with pytest.raises(RedisFull, match="high-water mark: new jobs are refused"):
        testjobs.side_effect.enqueue_call((redis_url, "k"), client=client)
    assert redis_client.llen("rq:queue:tests") == 0
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}", "REDIS_URL": redis_url}
    run = subprocess.run([sys.executable, "-m", "resilient", "enqueue", "testjobs.quiet_sum", "[3]"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert run.returncode != 0 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "raise maxmemory" in run.stderr
