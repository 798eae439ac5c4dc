"""Real memory, a real cgroup limit, the real kernel OOM killer (CI sets RESILIENT_REQUIRE_OOM_TESTS=1)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import testjobs
from cgroup_support import cgroups_or_skip
from conftest import wait_until

from resilient import JobParked
from resilient.memory.cgroup import Cgroup, find_cgroup, move_into, oom_kill_count

pytestmark = pytest.mark.oom
LIMIT = "300M"
LIMIT_BYTES = 300 * 1024 * 1024


@pytest.fixture
def memory_worker(start_worker):
    """A worker capped at 300M in its own real cgroup; yields (worker, its cgroup)."""
    cgroups_or_skip()

    def start(*flags: str):
        worker = start_worker("--memory-limit", LIMIT, *flags)
        group = wait_until(lambda: _own_group(worker.pid), what="worker in its own cgroup")
        return worker, group

    return start


def _own_group(pid: int) -> Cgroup | None:
    group = find_cgroup(pid)
    return group if group and group.path.name.startswith("resilient-worker-") else None


def _deaths(handle) -> list[dict]:
    return [e for e in handle.events() if e["type"] == "died"]


def test_leaky_job_is_preempted_not_killed_and_completes(client, memory_worker, redis_url, redis_client):
    """+20 MB per item under a 300M cgroup: the job steps aside at the hard line, resumes fresh, finishes."""
    worker, group = memory_worker()
    handle = testjobs.leaky.enqueue_call((redis_url, 30), client=client)
    assert handle.result(timeout=120) == sum(range(30))
    deaths = _deaths(handle)
    assert deaths and {d["cause"] for d in deaths} == {"preempted:memory"}
    assert oom_kill_count(group) == 0, "the kernel had to kill: the governor was too late"
    for death in deaths:
        rss = death["evidence"]["rss"]
        assert 0.85 * LIMIT_BYTES <= rss < LIMIT_BYTES, f"preempted at {rss} bytes"
    assert handle.attempts == len(deaths) + 1
    items = [int(e.decode().split(":")[1]) for e in redis_client.lrange(f"log:{handle.id}", 0, -1)]
    assert sorted(set(items)) == list(range(30))


def test_kernel_oom_kill_is_named_with_evidence_and_job_resumes(client, memory_worker):
    """A spike with no safe point: the kernel kills the horse, the death says oom:kernel with the counter."""
    worker, group = memory_worker()
    handle = testjobs.spike_once.enqueue_call((400,), client=client)
    result = handle.result(timeout=60)
    assert result == {"attempt": 2, "resumed_from": {"stage": "before spike"}, "previous": "oom:kernel"}
    (death,) = _deaths(handle)
    evidence = death["evidence"]
    assert death["cause"] == "oom:kernel"
    assert evidence["oom_kill_after"] == evidence["oom_kill_before"] + 1
    assert evidence["signal"] == "SIGKILL"
    assert evidence["limit"] == LIMIT_BYTES and "cgroup v1" in evidence["limit_source"]
    assert evidence["ru_maxrss"] > 200 * 1024 * 1024
    assert worker.proc.poll() is None, "the worker parent died with its horse"


def test_job_too_big_for_the_limit_is_parked_and_worker_goes_on(client, memory_worker, redis_url):
    """Over the limit before any progress, every time: parked with L and the RSS reached; other jobs still run."""
    worker, group = memory_worker()
    handle = testjobs.always_too_big.enqueue_call((400,), client=client)
    with pytest.raises(JobParked) as parked:
        handle.result(timeout=60)
    reason = parked.value.reason
    assert "OOM-killed by the kernel 2 times at checkpoint 0" in reason
    assert "of 300.0 MiB limit" in reason and "RSS under the limit reached" in reason
    assert testjobs.count_items.enqueue_call((redis_url, 5, 0.0), client=client).result(timeout=30) == 10


def test_soft_pressure_checkpoints_early_and_pauses_dequeue(client, memory_worker, redis_url, redis_client):
    """Soft level: ctx.pressure says so, a checkpoint is made early; while the group is under pressure the
    worker takes no new job, and takes it once the pressure is gone."""
    worker, group = memory_worker()
    handle = testjobs.hold_ballast.enqueue_call((redis_url,), client=client)
    assert handle.result(timeout=60) == "soft"
    pressure, seq = redis_client.lrange(f"log:{handle.id}", 0, -1)[0].decode().split(":")
    assert pressure == "soft" and int(seq) >= 1  # checkpoint_every is an hour: this save was early

    hog = _hog_in(group, mb=220)
    try:
        status_key = f"resilient:worker:{_worker_name(redis_client, worker.pid)}"
        queued = testjobs.count_items.enqueue_call((redis_url, 3, 0.0), client=client)
        wait_until(lambda: int(redis_client.hget(status_key, "pressure_waits") or 0) >= 5,
                   what="the worker to look at memory a few more times")
        assert queued.status == "queued"
    finally:
        hog.kill()
        hog.wait()
        hog.stdout.close()
        hog.stdin.close()
    assert queued.result(timeout=30) == 3


def _hog_in(group: Cgroup, mb: int) -> subprocess.Popen:
    """A process of ours holding `mb` MiB inside the worker's cgroup (allocated after it moved in: the
    kernel charges memory to the group a page was first touched in)."""
    code = f"import sys, time; sys.stdin.readline(); b = b'x' * ({mb} << 20); print(1, flush=True); time.sleep(600)"
    hog = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    move_into(group, hog.pid)
    hog.stdin.write(b"go\n")
    hog.stdin.flush()
    assert hog.stdout.readline().strip() == b"1"
    return hog


def _worker_name(redis_client, pid: int) -> str:
    def find() -> str | None:
        for key in redis_client.scan_iter("resilient:worker:*"):
            if int(redis_client.hget(key, "pid") or 0) == pid:
                return key.decode().split(":", 2)[2]
        return None
    return wait_until(find, what="worker status")


def test_growth_without_safe_points_is_stopped_by_the_governor(client, memory_worker):
    """No safe point while growing: the governor stops its own horse at the critical line (oom:self),
    before the kernel has to pick a victim; the job resumes and completes."""
    worker, group = memory_worker()
    handle = testjobs.grow_without_safe_points.enqueue_call((), client=client)
    assert handle.result(timeout=60) == {"attempt": 2, "previous": "oom:self"}
    (death,) = _deaths(handle)
    assert death["cause"] == "oom:self"
    assert death["evidence"]["rss"] >= 0.95 * LIMIT_BYTES
    assert oom_kill_count(group) == 0
    assert worker.proc.poll() is None


def test_group_of_a_killed_worker_is_cleaned_up_by_the_next(memory_worker):
    """A SIGKILLed worker leaves its empty cgroup behind; the next worker started there removes it."""
    worker, group = memory_worker()
    worker.proc.kill()
    worker.proc.wait(10)
    wait_until(lambda: not (group.path / "cgroup.procs").read_text().strip(), what="its group to empty")
    assert group.path.exists()
    memory_worker()
    wait_until(lambda: not group.path.exists(), what="the stale group to be removed")


def test_worker_starts_when_a_dead_workers_group_cannot_be_removed(memory_worker, client, redis_url):
    """A dead worker's group that cannot be removed (it has a child group) is logged; the worker starts."""
    parent = cgroups_or_skip()
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait(10)
    stuck = parent.path / f"resilient-worker-{gone.pid}"
    (stuck / "inner").mkdir(parents=True)
    try:
        worker, _ = memory_worker()
        handle = testjobs.count_items.enqueue_call((redis_url, 3, 0.0), client=client)
        assert handle.result(timeout=30) == 3
        assert "cannot remove the cgroup of a dead worker" in worker.output()
    finally:
        (stuck / "inner").rmdir()
        stuck.rmdir()


def test_a_reused_process_steps_aside_and_is_oom_killed_as_a_fresh_one(client, memory_worker, redis_url):
    """--jobs-per-process 10: after a first job in the same process, a leaky job steps aside at the hard
    line (0 kernel kills) and a spike is killed by the kernel with the counter as evidence; the deaths say
    the process had run jobs before, and both jobs resume and end right."""
    worker, group = memory_worker("--jobs-per-process", "10")
    first_pid, _ = testjobs.keep_in_module.enqueue_call((0,), client=client).result(timeout=30)
    leaky = testjobs.leaky.enqueue_call((redis_url, 30), client=client)
    assert leaky.result(timeout=120) == sum(range(30))
    preempted = _deaths(leaky)
    assert preempted and {d["cause"] for d in preempted} == {"preempted:memory"}
    assert oom_kill_count(group) == 0, "the kernel had to kill: the governor of a reused process was too late"
    assert preempted[0]["evidence"]["pid"] == first_pid
    assert preempted[0]["evidence"]["earlier_jobs_in_process"] == 1

    testjobs.keep_in_module.enqueue_call((0,), client=client).result(timeout=30)  # a process with a job done
    spike = testjobs.spike_once.enqueue_call((400,), client=client)
    assert spike.result(timeout=60) == {"attempt": 2, "resumed_from": {"stage": "before spike"},
                                        "previous": "oom:kernel"}
    (death,) = _deaths(spike)
    evidence = death["evidence"]
    assert evidence["oom_kill_after"] == evidence["oom_kill_before"] + 1 and evidence["signal"] == "SIGKILL"
    assert evidence["earlier_jobs_in_process"] >= 1
    assert worker.proc.poll() is None, "the worker parent died with its reused process"
