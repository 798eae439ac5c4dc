"""Redis Sentinel on real servers: a primary, a replica and three sentinels on loopback (sentinel_support.py).

A batch runs on several workers that know only the sentinels; the primary is SIGKILLed mid-run and comes
back later (as a replica: Sentinel demotes it). Every job completes once with the right result, no epoch is
handed out twice, and the time without service is printed. Durable writes (RESILIENT_DURABILITY=replica)
wait for a replica, are confirmed again while none has them, and report a write a failover lost.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import testjobs
from conftest import ROOT
from sentinel_support import HOST, PASSWORD, SERVICE, SentinelSet, wait_for

from resilient import Client
from resilient.api.handle import JobHandle
from resilient.config import Settings
from resilient.errors import RedisUnavailable
from resilient.model import Attempt
from resilient.storage.codec import encode
from resilient.storage.connection import open_redis
from resilient.storage.durability import WriteLost
from resilient.storage.store import Store

pytestmark = pytest.mark.sentinel
JOBS, WORKERS, ITEMS, DELAY = 12, 3, 120, 0.02  # each job ~2.5 s of work, four rounds on three workers


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    nodes = SentinelSet(tmp_path / "sentinel-set")
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[SentinelSet]:
    """A primary and a replica, no sentinels: for what durable writes do without a failover."""
    nodes = SentinelSet(tmp_path / "replicated", sentinels=0)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


def test_a_batch_survives_its_primary_killed_mid_run(sentinel_set: SentinelSet, start_worker, tmp_path: Path):
    """Workers (one of them reaping) follow the failover by themselves; each job completes exactly once with
    the right result; epochs only go up; the CLI reads the new primary through the same URL."""
    url = sentinel_set.url
    env = {"RESILIENT_DURABILITY": "replica"}
    workers = [start_worker("--lease-ttl", "4", *(["--reap"] if i == 0 else []), url=url, env=env)
               for i in range(WORKERS)]
    client = Client.from_url(url, durability="replica")
    wait_for(lambda: len(client.connection.smembers("rq:workers")) == WORKERS, "the workers to register")
    started = time.monotonic()
    handles = [testjobs.durable_sum.enqueue_call((ITEMS, DELAY), client=client) for _ in range(JOBS)]
    wait_for(lambda: _count(handles, "completed") >= 2 and _count(handles, "running") >= 2, "the batch under way")

    running_at_kill = _count(handles, "running")
    sentinel_set.primary.kill()
    killed = time.monotonic()
    outage = _until_a_write_succeeds(sentinel_set)
    sentinel_set.primary.start()  # the old primary comes back; the sentinels make it a replica of the new one
    durable_again = _until_a_replica_acknowledges(sentinel_set) - killed

    results = [h.result(timeout=60) for h in handles]
    elapsed = time.monotonic() - started
    try:
        assert results == [sum(range(ITEMS))] * JOBS
        assert sentinel_set.primary_port() == sentinel_set.replica.port, "no failover happened"
        assert sentinel_set.primary.client().info("replication")["role"] == "slave", "the old primary is no replica"
        for handle in handles:
            _assert_completed_once_with_rising_epochs(handle)
        assert all(w.proc.poll() is None for w in workers), "a worker gave up on Redis"
        assert not any("taken over" in w.output() for w in workers), "a horse waiting for a replica was stopped"
        status = _cli(url, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert {q["name"]: q["depth"] for q in json.loads(status.stdout)["queues"]}.get("failover") == 0
    except AssertionError:
        print(sentinel_set.logs(), *(w.output()[-4000:] for w in workers), sep="\n")
        raise
    deaths = Counter(e["cause"] for h in handles for e in h.events() if e["type"] == "died")
    print(f"\nfailover: {JOBS} jobs on {WORKERS} workers, {running_at_kill} running at the kill; no service for "
          f"{outage:.2f} s (kill to the first write on the new primary); durable writes again after "
          f"{durable_again:.2f} s (the old primary back as a replica); batch {elapsed:.1f} s; "
          f"attempts {sum(h.attempts for h in handles)}; deaths {dict(deaths)}")


def test_a_wrong_sentinel_url_stops_a_command_and_a_worker_in_one_line(sentinel_set: SentinelSet, tmp_path: Path):
    """An unknown primary name is not waited for: asking again cannot fix it."""
    wrong = sentinel_set.url.replace(f"/{SERVICE}/", "/no-such-primary/")
    for command in (["status"], ["worker", "testjobs"]):
        done = _cli(wrong, *command, timeout=20)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stderr
        assert lines[0] == (f"error: cannot use Redis at {wrong.replace(PASSWORD, '***')}: the sentinels monitor no "
                            f"primary named 'no-such-primary' (they monitor: {SERVICE}): fix the name in the URL")
    with pytest.raises(RedisUnavailable, match=r"no sentinel answers \(127.0.0.1:\d+ connection refused\): check "
                                               "the sentinel hosts and ports in the URL, or start the sentinels"):
        open_redis(Settings(redis_url=f"redis+sentinel://{HOST}:{sentinel_set.primary.port + 7}/m"))
    malformed = _cli(f"redis+sentinel://{HOST}:26379", "status")
    assert malformed.returncode == 1
    assert malformed.stderr.strip().endswith("no primary name: add the name the sentinels monitor (`sentinel "
                                             "monitor NAME ...`); the form is redis+sentinel://[:password@]host1:"
                                             "26379,host2:26379/SERVICE[/DB]")


def test_a_durable_write_waits_until_a_replica_has_it(replicated: SentinelSet, caplog: pytest.LogCaptureFixture):
    """Replica paused (SIGSTOP): a durable checkpoint does not return; it is confirmed again, with one log line
    a try, and returns once the replica, resumed, has it. A plain checkpoint does not wait."""
    store, attempt = _begun(replicated, timeout=0.3)
    replica = replicated.replica
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        store.save_checkpoint(attempt, encode({"i": 1}))  # not durable: returns at once
        saved: list[int] = []
        with caplog.at_level(logging.WARNING, logger="resilient.connection"):
            thread = threading.Thread(target=lambda: saved.append(store.save_checkpoint(attempt, encode({"i": 2}),
                                                                                        durable=True)))
            thread.start()
            time.sleep(1.5)
            assert thread.is_alive() and not saved, "a durable write returned while no replica had it"
            os.kill(replica.pid, signal.SIGCONT)
            thread.join(15)
        assert saved == [2]
        assert any("no replica acknowledged checkpoint of job j within 300 ms" in r.getMessage()
                   and "waiting for a replica" in r.getMessage() for r in caplog.records)
    finally:
        os.kill(replica.pid, signal.SIGCONT)


def test_a_ctx_once_record_waits_until_a_replica_has_it(replicated: SentinelSet):
    """Replica paused: recording a ctx.once effect does not return (a failover could lose the record and the
    effect would run again); it returns once the replica, resumed, has it."""
    store, attempt = _begun(replicated, timeout=0.3)
    os.kill(replicated.replica.pid, signal.SIGSTOP)
    done = threading.Event()
    try:
        thread = threading.Thread(target=lambda: (store.record_once(attempt, "mail:ann", encode("sent")), done.set()))
        thread.start()
        assert not done.wait(1.5), "a ctx.once record returned while no replica had it"
        os.kill(replicated.replica.pid, signal.SIGCONT)
        thread.join(15)
    finally:
        os.kill(replicated.replica.pid, signal.SIGCONT)
    assert done.is_set() and store.once_result("j", "mail:ann") == encode("sent")


def test_a_start_waiting_for_a_replica_keeps_its_lease(replicated: SentinelSet):
    """A durable BEGIN that waits for a replica renews the lease it took, so no reaper takes the job over
    meanwhile; it returns once the replica, resumed, has it."""
    client, _ = open_redis(Settings(redis_url=f"redis://:{PASSWORD}@{HOST}:{replicated.primary.port}/0"))
    store = Store(client, Settings(lease_ttl=2.0, durability="replica", durability_timeout=0.3))
    store.create_job("j", "testjobs.durable_sum", "failover", 10)
    os.kill(replicated.replica.pid, signal.SIGSTOP)
    begun: list[object] = []
    try:
        thread = threading.Thread(target=lambda: begun.append(store.begin_attempt("j", "w", "h")))
        thread.start()
        time.sleep(6.0)  # three lease periods, the waits between tries grown past one
        assert thread.is_alive() and not begun
        assert float(client.zscore("resilient:leases", "j") or 0) > store.server_ms(), "the lease ran out"
        os.kill(replicated.replica.pid, signal.SIGCONT)
        thread.join(15)
    finally:
        os.kill(replicated.replica.pid, signal.SIGCONT)
    assert begun and begun[0][0] == "OK"


def test_a_durable_write_lost_before_a_replica_had_it_is_reported(replicated: SentinelSet):
    """While the write waits for a replica, the job hash stops showing it (as after a failover to a replica
    that never had it): the confirmation finds it gone and raises WriteLost, which the horse takes for Redis
    being away (exit 79, no blame)."""
    store, attempt = _begun(replicated, timeout=0.3)
    os.kill(replicated.replica.pid, signal.SIGSTOP)
    outcome: list[BaseException | None] = []

    def finish() -> None:
        try:
            store.complete(attempt, encode(42))
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    try:
        thread = threading.Thread(target=finish)
        thread.start()
        time.sleep(0.8)  # WAIT timed out (0.3 s), one confirmation too (0.6 s); the next comes at 1.1 s
        replicated.primary.client().hset("resilient:job:j", "status", "running")  # the FINISH is "gone"
        thread.join(15)
    finally:
        os.kill(replicated.replica.pid, signal.SIGCONT)
    assert len(outcome) == 1 and isinstance(outcome[0], WriteLost)
    assert "the end (completed) of job j was lost in a failover before any replica had it" in str(outcome[0])


def test_a_start_lost_in_a_failover_puts_the_job_back_once(client, redis_client):
    """A multi-queue worker's BLPOP leaves no intermediate entry: when the BEGIN that followed it is lost (the new
    primary has the dequeue, not the start), the worker puts the job back at the front of its queue, unless it is
    there already (the dequeue was lost too), or someone else began it."""
    client.store.create_job("j", "testjobs.durable_sum", "failover", 10)
    queue = "rq:queue:failover"
    assert client.store.rescue_stranded("j", "failover") is False  # not taken by this caller: left alone
    assert client.store.rescue_stranded("j", "failover", taken=True) is True
    assert redis_client.lrange(queue, 0, -1) == [b"j"]
    assert client.store.rescue_stranded("j", "failover", taken=True) is False  # queued already: no second entry
    assert redis_client.lrange(queue, 0, -1) == [b"j"]
    redis_client.delete(queue)
    client.store.begin_attempt("j", "w", "h")
    assert client.store.rescue_stranded("j", "failover", taken=True) is False  # another attempt owns it
    assert redis_client.llen(queue) == 0


def test_durable_write_cost(replicated: SentinelSet):
    """What WAIT 1 adds to a checkpoint save with one replica on loopback (printed; docs/design.md quotes it)."""
    store, attempt = _begun(replicated)
    data = encode({"i": 1, "total": 2})
    rounds, per_round = 5, 400
    plain, durable = [], []
    for _ in range(rounds):  # interleaved, so that both see the same machine
        for durable_flag, into in ((False, plain), (True, durable)):
            began = time.perf_counter()
            for _ in range(per_round):
                store.save_checkpoint(attempt, data, durable=durable_flag)
            into.append((time.perf_counter() - began) / per_round * 1e6)
    plain_us, durable_us = statistics.median(plain), statistics.median(durable)
    print(f"\ncheckpoint save, one replica on loopback: {plain_us:.0f} µs plain, {durable_us:.0f} µs durable "
          f"(+{durable_us - plain_us:.0f} µs for WAIT 1), median of {rounds} x {per_round}")
    assert durable_us < plain_us + 5000


def _begun(nodes: SentinelSet, timeout: float = 1.0) -> tuple[Store, Attempt]:
    client, _ = open_redis(Settings(redis_url=f"redis://:{PASSWORD}@{HOST}:{nodes.primary.port}/0"))
    store = Store(client, Settings(durability="replica", durability_timeout=timeout))
    store.create_job("j", "testjobs.durable_sum", "failover", 10)
    verdict, attempt = store.begin_attempt("j", "w", "h")
    assert verdict == "OK" and isinstance(attempt, Attempt)
    return store, attempt


def _count(handles: list[JobHandle], status: str) -> int:
    return sum(h.status == status for h in handles)


def _until_a_write_succeeds(nodes: SentinelSet) -> float:
    """Seconds from now until a write through the sentinels succeeds (nothing in between retries for us)."""
    began = time.monotonic()

    def written() -> bool:
        port = nodes.primary_port()
        node = nodes.replica if port == nodes.replica.port else nodes.primary
        return bool(node.client().set("failover:probe", "1"))

    wait_for(written, "a writable primary", timeout=60)  # a sentinel starved for 2 s "tilts": 30 s idle
    return time.monotonic() - began


def _until_a_replica_acknowledges(nodes: SentinelSet) -> float:
    def acknowledged() -> bool:
        new_primary = nodes.replica.client()
        new_primary.set("failover:probe", "2")
        return int(new_primary.wait(1, 200)) >= 1

    wait_for(acknowledged, "the old primary back as a replica", timeout=60)
    return time.monotonic()


def _assert_completed_once_with_rising_epochs(handle: JobHandle) -> None:
    events = handle.events()
    kinds = Counter(e["type"] for e in events)
    assert kinds["completed"] == 1 and handle.status == "completed", (handle.id, events)
    epochs = [int(e["epoch"]) for e in events if e["type"] == "started"]
    assert epochs == sorted(set(epochs)), f"job {handle.id}: an epoch reused or gone back: {epochs}"
    completed = next(e for e in events if e["type"] == "completed")
    assert int(completed["epoch"]) == epochs[-1], f"job {handle.id} completed by an attempt that is not its last"
    for died in (e for e in events if e["type"] == "died"):
        assert int(died["epoch"]) in epochs, f"job {handle.id}: a death under an epoch never started: {died}"


def _cli(url: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": url, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, "-m", "resilient", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
