"""`status --json` and `inspect --json` give the documented fields for jobs in every state."""

from __future__ import annotations

import os
import signal

import testjobs
from conftest import cli_json, wait_until

from resilient.model import Death
from resilient.ops.views import state_text
from resilient.storage.store import now_ms

JOB_FIELDS = {"id", "name", "queue", "status", "attempt", "done", "total", "checkpoint_seq", "checkpoint_age_s",
              "deaths", "worker", "pid", "parked_reason", "error"}
INSPECT_FIELDS = JOB_FIELDS | {"timeline", "checkpoints", "memory", "result"}
WORKER_FIELDS = {"name", "hostname", "pid", "state", "queues", "current_job", "rss", "limit", "limit_source",
                 "level", "soft", "hard", "horse_rss", "group", "waiting_for"}


def _died(client, job_id: str, cause: str) -> None:
    """An attempt of `job_id` that ended in `cause`, recorded the way the worker records it."""
    _, attempt = client.store.begin_attempt(job_id, "w", "h")
    evidence = {"cause": cause, "rss": 250 << 20, "limit": 300 << 20, "limit_source": "cgroup v1 x",
                "oom_kill_before": 0, "oom_kill_after": 1 if cause == "oom:kernel" else 0}
    client.store.record_death(attempt, Death(cause, evidence))
    client.store.mark_requeued(attempt, cause, "tests")


def test_every_state_has_the_documented_fields(client, start_worker, redis_url, redis_client):
    """running, completed, preempted, oom:kernel, lost and parked jobs all inspect with the same fields."""
    start_worker()
    start_worker()
    completed = testjobs.side_effect.enqueue_call((redis_url, "k"), client=client)
    assert completed.result(timeout=30) == "ran"
    parked = testjobs.die_at_once.enqueue_call((redis_url,), client=client)
    running = testjobs.iterate_items.enqueue_call((redis_url, 3000, 0.01), client=client)
    wait_until(lambda: running.status == "running" and parked.status == "parked", timeout=60, what="states")

    client.store.create_job("pre", "testjobs.leaky", "elsewhere", 10)
    _died(client, "pre", "preempted:memory")
    client.store.create_job("oom", "testjobs.leaky", "elsewhere", 10)
    _died(client, "oom", "oom:kernel")
    client.store.create_job("lost", "testjobs.leaky", "elsewhere", 10)
    client.store.begin_attempt("lost", "gone", "gone-host")
    assert client.store.claim_lost("lost", now_ms() + 60_000)

    expected_death = {"preempted:memory": "pre", "oom:kernel": "oom", "lost": "lost", "killed": parked.id}
    for job_id in (running.id, completed.id, parked.id, "pre", "oom", "lost"):
        shown = cli_json(redis_url, "inspect", job_id)
        assert INSPECT_FIELDS <= set(shown), job_id
        assert {"limit", "limit_source", "soft", "hard", "critical", "samples"} <= set(shown["memory"])
        assert all({"type", "at"} <= set(event) for event in shown["timeline"])
    for cause, job_id in expected_death.items():
        died = [e for e in cli_json(redis_url, "inspect", job_id)["timeline"] if e["type"] == "died"]
        assert died[-1]["cause"] == cause and "explanation" in died[-1] and "evidence" in died[-1]
    assert cli_json(redis_url, "inspect", parked.id)["parked_reason"].startswith("died 3 times")
    assert cli_json(redis_url, "inspect", running.id)["status"] == "running"

    status = cli_json(redis_url, "status")
    assert {"queues", "workers", "groups", "running", "parked", "recent_deaths"} <= set(status)
    assert all({"name", "depth", "finished", "delayed"} <= set(q) for q in status["queues"])
    assert status["workers"] and all(WORKER_FIELDS <= set(w) for w in status["workers"])
    assert [job["id"] for job in status["running"]] == [running.id]
    (runner,) = [w for w in status["workers"] if w["current_job"] == running.id]
    assert runner["horse_rss"] > 0 and runner["waiting_for"] is None
    assert JOB_FIELDS <= set(status["running"][0])
    assert status["running"][0]["pid"] == int(client.store.job_fields(running.id)["horse_pid"])
    assert status["parked"] == 1
    assert {d["cause"] for d in status["recent_deaths"]} >= {"killed", "lost", "oom:kernel", "preempted:memory"}


def test_a_worker_killed_whole_is_shown_silent(start_worker, redis_url):
    """RQ keeps a SIGKILLed worker registered for minutes: status says how long it has been silent (a live
    worker publishes every second), and the table calls it probably gone past 10 s."""
    worker = start_worker()
    wait_until(lambda: [w for w in cli_json(redis_url, "status")["workers"] if w["silent_s"] is not None],
               what="the worker's first status")
    (alive,) = cli_json(redis_url, "status")["workers"]
    assert alive["silent_s"] < 3
    os.kill(worker.pid, signal.SIGKILL)
    worker.proc.wait(10)
    (gone,) = wait_until(lambda: [w for w in cli_json(redis_url, "status")["workers"] if w["silent_s"] >= 3],
                         what="the killed worker to fall silent")
    assert gone["name"] == alive["name"]
    assert state_text({**gone, "silent_s": 42.0}) == f"{gone['state']}, silent 42 s (dead?)"
    assert state_text(alive) == alive["state"]
