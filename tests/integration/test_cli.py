"""The `resilient` command as a user runs it: enqueue, burst worker, status, inspect, parked, requeue, demo."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, wait_until


def run(url: str | None, *args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}"}
    env.pop("REDIS_URL", None)
    prefix = ["--redis-url", url] if url else []
    return subprocess.run([sys.executable, "-m", "resilient", *prefix, *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


def test_enqueue_burst_worker_status_and_inspect(redis_url):
    """Enqueue by name, drain with --burst (exit 0), then status/inspect --json show the finished job."""
    enqueued = run(redis_url, "enqueue", "testjobs.count_items", json.dumps([redis_url, 10, 0.0]))
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = enqueued.stdout.strip()
    worker = run(redis_url, "worker", "testjobs", "--burst")
    assert worker.returncode == 0, worker.stderr
    status = json.loads(run(redis_url, "status", "--json").stdout)
    assert {"name": "tests", "depth": 0, "finished": 1, "delayed": 0} in status["queues"]
    inspected = json.loads(run(redis_url, "inspect", job_id, "--json").stdout)
    assert inspected["status"] == "completed" and inspected["attempt"] == 1
    assert [e["type"] for e in inspected["timeline"]] == ["enqueued", "started", "completed"]
    assert inspected["result"] == 45 and "result: 45" in run(redis_url, "inspect", job_id).stdout


def test_parked_then_requeue(redis_url):
    """A parked job is listed with its reason; `requeue` gives it another go (and it is parked again)."""
    job_id = run(redis_url, "enqueue", "testjobs.die_at_once", json.dumps([redis_url])).stdout.strip()
    assert run(redis_url, "worker", "testjobs", "--burst").returncode == 0
    listed = run(redis_url, "parked").stdout
    assert job_id in listed and "died 3 times at checkpoint 0" in listed
    requeued = run(redis_url, "requeue", job_id)
    assert requeued.stdout.strip() == f"job {job_id} requeued on tests"
    assert run(redis_url, "worker", "testjobs", "--burst").returncode == 0
    inspected = json.loads(run(redis_url, "inspect", job_id, "--json").stdout)
    assert inspected["status"] == "parked" and inspected["attempt"] == 6


@pytest.mark.parametrize("args, message", [
    (["enqueue", "testjobs.nope"], "'testjobs.nope' is not a registered @resilient.job"),
    (["enqueue", "testjobs.count_items", "[1,"], "ARGS_JSON is not valid JSON"),
    (["inspect", "no-such-job"], "no job no-such-job"),
    (["worker", "no_such_module"], "cannot import job module 'no_such_module'"),
    (["--redis-url", "localhost:6379", "status"], "localhost:6379 is not a Redis URL: write redis://"),
    (["top", "--interval", "-1"], "Invalid value for '--interval'"),
    (["requeue", "some-job", "--attempts", "0"], "Invalid value for '--attempts'"),
    (["enqueue"], "Missing argument 'NAME'; see `resilient enqueue --help`"),
    (["status", "--bogus"], "No such option '--bogus'"),
    (["enqueue", "testjobs.count_items", "[]"], "testjobs.count_items cannot be called with these arguments: "
                                                "missing a required argument: 'url'"),
    (["enqueue", "testjobs.raises", '["m"]', "--kwargs", '{"bogus": 1}'], "unexpected keyword argument 'bogus'"),
])
def test_cli_errors_are_one_line(redis_url, args, message):
    """Every CLI error is one line that says what is wrong, with exit code 1 (click's usage errors too)."""
    result = run(redis_url, *args)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_demo_runs_end_to_end_on_the_embedded_server(tmp_path):
    """`resilient demo` with no REDIS_URL: starts its own server, kills the job, shows it resume, checks it."""
    demo = run(None, "--data-dir", str(tmp_path / "data"), "demo", "--items", "30", cwd=tmp_path, timeout=120)
    try:
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "SIGKILL" in demo.stdout and "attempts: 2" in demo.stdout and "OK" in demo.stdout
        assert re.search(r"as job [0-9a-f]{32}; worker pid \d+", demo.stdout), "a line was broken at 80 columns"
    finally:
        run(None, "--data-dir", str(tmp_path / "data"), "server", "stop", cwd=tmp_path)


def test_a_worker_name_in_use_is_refused_in_one_line(redis_url, redis_client, start_worker):
    """A second worker under a name that is registered (running, or SIGKILLed moments ago) is refused with
    one line saying what to do, not RQ's traceback."""
    start_worker("--name", "dup")
    wait_until(lambda: redis_client.exists("rq:worker:dup"), what="the first worker to register")
    result = run(redis_url, "worker", "testjobs", "--name", "dup", timeout=30)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: a worker named 'dup' is registered already")


def test_inspect_and_requeue_take_an_id_cut_short_as_top_shows_it(redis_url):
    """`top` shows job ids cut to 12 characters: inspect and requeue accept such a start when it names one
    job, and say so in one line when it names several."""
    job_id = run(redis_url, "enqueue", "testjobs.raises", '["boom"]').stdout.strip()
    assert run(redis_url, "worker", "testjobs", "--burst").returncode == 0
    shown = json.loads(run(redis_url, "inspect", job_id[:12], "--json").stdout)
    assert shown["id"] == job_id and shown["status"] == "failed"
    assert run(redis_url, "requeue", job_id[:12]).stdout.strip() == f"job {job_id} requeued on tests"
    run(redis_url, "enqueue", "testjobs.raises", '["boom"]')
    several = run(redis_url, "inspect", "")
    assert several.returncode == 1 and "more than one job id starts with ''" in several.stderr
