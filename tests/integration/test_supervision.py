"""A whole worker dies (parent and horse): its lease expires and the job resumes elsewhere, once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import redis
import testjobs
from conftest import ROOT, wait_until

from resilient.config import Settings
from resilient.runtime.supervisor import Reaper
from resilient.storage.connection import connect
from resilient.storage.store import now_ms

LEASE_TTL = 2.0


def test_whole_worker_sigkill_resumes_on_another_worker(client, start_worker, redis_url, redis_client, tmp_path):
    """SIGKILL parent and horse: within lease_ttl + 1 s a running supervisor requeues the job; another worker
    finishes it."""
    supervisor, armed_at = _armed_supervisor(redis_url, tmp_path)
    try:
        first = start_worker("--lease-ttl", str(LEASE_TTL))
        handle = testjobs.count_items.enqueue_call((redis_url, 300, 0.01), client=client)
        wait_until(lambda: int(client.store.job_fields(handle.id).get("seq", 0)) >= 3, what="checkpoints")
        horse = int(client.store.job_fields(handle.id)["horse_pid"])
        wait_until(lambda: time.monotonic() >= armed_at, what="the supervisor to have watched a lease period")
        os.kill(first.pid, signal.SIGKILL)
        killed_at = now_ms()
        wait_until(lambda: not _alive(horse), timeout=5, what="the horse to die with its parent")
        start_worker("--lease-ttl", str(LEASE_TTL))
        assert handle.result(timeout=60) == sum(range(300))
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(10) == 0
    events = handle.events()
    kinds = [e["type"] for e in events]
    assert kinds[kinds.index("died"):kinds.index("died") + 2] == ["died", "requeued"]
    lost = next(e for e in events if e["type"] == "died")
    assert lost["cause"] == "lost" and lost["evidence"]["worker"]
    requeued_at = int(next(e for e in events if e["type"] == "requeued")["at"])
    assert requeued_at - killed_at <= (LEASE_TTL + 1) * 1000
    first_after = next(int(e.split(b":")[1]) for e in redis_client.lrange(f"log:{handle.id}", 0, -1)
                       if e.startswith(b"2:"))
    assert first_after >= 3, "restarted from scratch"


def test_two_reapers_requeue_each_lost_job_exactly_once(client, redis_url, redis_client):
    """100 expired leases, two reapers racing: each job is requeued once, none twice."""
    settings = Settings(redis_url=redis_url)
    for i in range(100):
        testjobs.side_effect.enqueue_call((redis_url, "k"), client=client, job_id=f"lost-{i}")
        client.store.begin_attempt(f"lost-{i}", "gone-worker", "gone-host")
    redis_client.delete("rq:queue:tests")
    at = now_ms() + 60_000  # every lease (10 s) has expired by then
    reapers = [Reaper(connect(redis_url), settings) for _ in range(2)]
    claims: list[list] = [[], []]
    threads = [threading.Thread(target=lambda i=i: claims[i].extend(reapers[i].reap_once(at))) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    claimed = [c.attempt.job_id for c in claims[0] + claims[1]]
    assert sorted(claimed) == sorted(f"lost-{i}" for i in range(100))
    queue_entries = [e.decode() for e in redis_client.lrange("rq:queue:tests", 0, -1)]
    assert sorted(queue_entries) == sorted(claimed)
    assert all(client.store.job_fields(f"lost-{i}")["status"] == "queued" for i in range(100))


def _armed_supervisor(url: str, cwd) -> tuple[subprocess.Popen, float]:
    """A supervisor that has reached Redis, and the monotonic time from which it reaps: a reaper claims
    expired leases only once it has seen Redis for a whole lease period (an outage is not a death)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}", "REDIS_URL": url}
    log = cwd / "supervisor.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "resilient", "supervisor", "--lease-ttl", str(LEASE_TTL)],
                                   env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    wait_until(lambda: b"reaping every" in log.read_bytes(), what="the supervisor to reach Redis")
    return process, time.monotonic() + LEASE_TTL


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_paused_zombie_writes_nothing_and_goes_on(client, start_worker, redis_url, redis_client, tmp_path):
    """SIGSTOP a worker past its lease, let the job finish elsewhere, SIGCONT: its writes are refused
    (STALE), the result and checkpoint stay as they were, and the zombie takes the next job."""
    zombie = start_worker("--lease-ttl", str(LEASE_TTL))
    handle = testjobs.count_items.enqueue_call((redis_url, 300, 0.01), client=client)
    wait_until(lambda: int(client.store.job_fields(handle.id).get("seq", 0)) >= 3, what="checkpoints")
    horse = int(client.store.job_fields(handle.id)["horse_pid"])
    for pid in (zombie.pid, horse):
        os.kill(pid, signal.SIGSTOP)
    supervisor, _ = _armed_supervisor(redis_url, tmp_path)
    try:
        rescuer = start_worker("--lease-ttl", str(LEASE_TTL))
        assert handle.result(timeout=60) == sum(range(300))
        rescuer.stop()
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(10)
    result, checkpoint = client.store.result_bytes(handle.id), client.store.load_checkpoint(handle.id)
    for pid in (horse, zombie.pid):
        os.kill(pid, signal.SIGCONT)

    after = testjobs.side_effect.enqueue_call((redis_url, "after"), client=client)
    assert after.result(timeout=30) == "ran"  # only the zombie is left to run it
    wait_until(lambda: not _alive(horse), timeout=10, what="the stale horse to stop")
    assert client.store.result_bytes(handle.id) == result
    assert client.store.load_checkpoint(handle.id) == checkpoint
    assert [e["type"] for e in handle.events()].count("completed") == 1
    assert handle.status == "completed"
    assert zombie.proc.poll() is None
    wait_until(lambda: redis_client.zcard("rq:wip:tests") == 0, timeout=5, what="no ghost in StartedJobRegistry")


def test_supervisor_keeps_n_workers_running(client, redis_url, redis_client, tmp_path):
    """`supervisor --workers 2`: a killed worker is replaced; jobs still run; SIGTERM stops it all, exit 0."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}", "REDIS_URL": redis_url}
    supervisor = subprocess.Popen([sys.executable, "-m", "resilient", "supervisor", "--workers", "2", "testjobs"],
                                  env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first = wait_until(lambda: _worker_pids(redis_client) if len(_worker_pids(redis_client)) == 2 else None,
                           what="two workers")
        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(_worker_pids(redis_client) - {victim}) == 2, what="a replacement worker")
        assert testjobs.side_effect.enqueue_call((redis_url, "k"), client=client).result(timeout=30) == "ran"
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0
    assert not any(_alive(pid) for pid in _worker_pids(redis_client) - {victim})


def _worker_pids(redis_client) -> set[int]:
    """PIDs of live workers that publish a status (dead ones linger until their key expires)."""
    pids = {int(redis_client.hget(key, "pid") or 0) for key in redis_client.scan_iter("resilient:worker:*")}
    return {pid for pid in pids if pid and _alive(pid)}


def test_supervisor_workers_use_the_server_named_on_its_command_line(client, redis_url, tmp_path):
    """`resilient --redis-url X supervisor --workers 1`: its worker runs the jobs on X (no REDIS_URL in the
    environment), and nobody starts an embedded server in the current directory."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RESILIENT_REDIS_URL", "REDIS_URL_FILE")}
    env["PYTHONPATH"] = f"{ROOT / 'tests'}{os.pathsep}{ROOT}"
    supervisor = subprocess.Popen([sys.executable, "-m", "resilient", "--redis-url", redis_url, "supervisor",
                                   "--workers", "1", "testjobs"], env=env, cwd=tmp_path,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert testjobs.side_effect.enqueue_call((redis_url, "k"), client=client).result(timeout=30) == "ran"
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0
    assert not (tmp_path / ".resilient").exists(), "a worker started an embedded server of its own"


def test_unhandled_error_ends_the_worker_with_a_failure_code(start_worker, redis_client):
    """An error the worker cannot handle (its queue key holds a string) ends it with a non-zero exit code,
    so a supervisor sees a crash, not a clean stop."""
    redis_client.set("rq:queue:tests", "not a list")
    worker = start_worker()
    assert worker.proc.wait(timeout=30) != 0


def test_a_lost_job_is_judged_by_the_same_rules_as_any_death(client, redis_url):
    """The reaper decides with deaths.decide and the rules stored with the job: lost twice without progress
    under max_deaths_without_progress=2 parks it, with the same diagnosis a killed job gets."""
    client.store.create_job("lost-twice", "testjobs.side_effect", "tests", 10, max_stuck=2)
    reaper = Reaper(connect(redis_url), Settings(redis_url=redis_url))
    at = now_ms() + 60_000
    for n in (1, 2):
        client.store.begin_attempt("lost-twice", "gone-worker", "gone-host")
        (claim,) = reaper.reap_once(at * n)
        assert claim.death.cause == "lost" and claim.count.stuck == n
    fields = client.store.job_fields("lost-twice")
    assert fields["status"] == "parked"
    assert fields["parked_reason"].startswith("died 2 times at checkpoint 0 without progress (last: lost")


def test_what_a_job_started_ends_when_its_whole_worker_is_killed(client, redis_url, redis_client, tmp_path):
    """`supervisor --workers 1`: SIGKILL the worker parent; its horse dies with it, and the child process the
    job started (adopted by the supervisor, a subreaper) is ended too; the job resumes elsewhere."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}", "REDIS_URL": redis_url}
    supervisor = subprocess.Popen([sys.executable, "-m", "resilient", "supervisor", "--workers", "1", "testjobs",
                                   "--lease-ttl", "2"], env=env, cwd=tmp_path,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        handle = testjobs.child_then_work.enqueue_call((redis_url,), client=client)
        key = f"pids:{handle.id}"
        child = int(wait_until(lambda: redis_client.lindex(key, 0), what="the job's child"))
        (worker,) = wait_until(lambda: _worker_pids(redis_client), what="the worker")
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: not _alive(child), what="the job's child to end")
        assert handle.result(timeout=60) == 400
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0


def test_sigterm_ends_a_supervisor_and_its_idle_workers_at_once_while_redis_is_away(redis_url, tmp_path):
    """`supervisor --workers 2` (a container's default command) whose Redis takes no writes: SIGTERM ends it
    and its workers, exit 0, within 2 s, though its reaper's pass waits on Redis (past a container's grace)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}", "REDIS_URL": redis_url}
    log = tmp_path / "supervisor.log"
    with open(log, "wb") as out:
        supervisor = subprocess.Popen([sys.executable, "-m", "resilient", "supervisor", "--workers", "2", "testjobs"],
                                      env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    admin = redis.Redis.from_url(redis_url)
    try:
        workers = wait_until(lambda: _worker_pids(admin) if len(_worker_pids(admin)) == 2 else None,
                             what="two workers")
        admin.client_pause(60_000, all=False)  # writes wait (the reaper's, the workers' dequeue); CLIENT LIST answers
        # the supervisor's reaper and both workers blocked on a reply that will not come
        wait_until(lambda: sum("b" in c["flags"] for c in admin.client_list()) >= 3, what="everyone blocked")
        began = time.monotonic()
        supervisor.send_signal(signal.SIGTERM)
        try:
            code = supervisor.wait(20)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - began
        assert code == 0, log.read_text(errors="replace")[-3000:]
        assert took < 2.0, f"SIGTERM took {took:.1f} s to end the supervisor while Redis took no writes"
        assert not any(_alive(pid) for pid in workers)
    finally:
        admin.client_unpause()
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
