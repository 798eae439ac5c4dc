"""Real containers (podman, runc, cgroup v1 here): the image from workers/Dockerfile under a container memory
limit, `podman stop`, N workers under one limit, and compose.yaml under podman-compose.

CI runs .ci/setup-containers first and sets RESILIENT_REQUIRE_CONTAINER_TESTS=1 (a skip is a failure).
Workers reach the session's Redis on the host through `--network host`; compose brings its own Redis.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import testjobs
from conftest import wait_until
from container_support import REDIS_IMAGE, ROOT, Containers, Podman, skip_or_fail
from rq import Worker

from resilient import Client
from resilient.api.handle import JobHandle
from resilient.memory.cgroup import oom_kill_count
from resilient.storage.server import ensure_server, stop_server

pytestmark = [pytest.mark.containers, pytest.mark.timeout(300)]
MiB = 1 << 20


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    """Podman with what the tests need, and the project's image built (cached layers when unchanged)."""
    tool = Podman(tmp_path_factory.mktemp("podman"))
    missing = tool.missing()
    if missing:
        skip_or_fail(missing)
    tool.build_image()
    return tool


@pytest.fixture
def containers(podman: Podman, redis_url: str) -> Iterator[Containers]:
    started = Containers(podman, redis_url)
    yield started
    started.remove_all()


def _deaths(handle) -> list[dict]:
    return [event for event in handle.events() if event["type"] == "died"]


def _items(client: redis.Redis, job_id: str) -> list[int]:
    """The items a testjobs job logged, in the order it did them (every attempt)."""
    return [int(entry.decode().split(":")[1]) for entry in client.lrange(f"log:{job_id}", 0, -1)]


def _workers(connection: redis.Redis) -> int:
    return len(Worker.all(connection=connection))


def test_worker_container_governs_its_limit_and_survives_a_kernel_kill(podman, containers, client, redis_url,
                                                                       redis_client):
    """One worker in a 300M container: L and its source are the container's cgroup; a leaky job steps aside
    and completes with no kernel kill; a spike is killed by the kernel, named with the counter as evidence
    (the log is unreadable in there), and resumes; the container keeps running."""
    name = containers.start("300m", env={"RESILIENT_WORKERS": "1"})
    wait_until(lambda: _workers(redis_client) == 1, timeout=60, what="the container's worker to register")
    group = podman.cgroup(name)

    leaky = testjobs.leaky.enqueue_call((redis_url, 30), client=client)
    assert leaky.result(timeout=120) == sum(range(30))
    steps = _deaths(leaky)
    assert steps and {d["cause"] for d in steps} == {"preempted:memory"}, steps
    for step in steps:
        assert step["evidence"]["limit"] == 300 * MiB
        assert step["evidence"]["limit_source"].startswith("cgroup v"), step["evidence"]["limit_source"]
    assert oom_kill_count(group) == 0, "the kernel had to kill: the governor was too late"
    assert sorted(set(_items(redis_client, leaky.id))) == list(range(30))

    spike = testjobs.spike_once.enqueue_call((400,), client=client)
    assert spike.result(timeout=60) == {"attempt": 2, "resumed_from": {"stage": "before spike"},
                                        "previous": "oom:kernel"}
    (death,) = _deaths(spike)
    evidence = death["evidence"]
    assert death["cause"] == "oom:kernel"
    assert evidence["oom_kill_after"] == evidence["oom_kill_before"] + 1 == oom_kill_count(group)
    before, after = evidence["oom_kill_before"], evidence["oom_kill_after"]
    assert evidence["kernel_log"].endswith(f"the cgroup's oom_kill counter rose {before}→{after}"), evidence
    assert containers.running(name), podman.logs(name)
    assert _workers(redis_client) == 1, "the worker itself died and was replaced"


def test_podman_stop_checkpoints_and_a_second_container_resumes(podman, containers, client, redis_url,
                                                                redis_client):
    """`podman stop` during a job: it checkpoints and goes back to the queue, the container exits 0 well
    within its stop timeout, and a second container finishes the job with no item done twice."""
    first = containers.start("300m", env={"RESILIENT_WORKERS": "1"}, stop_timeout=30)
    handle = testjobs.count_items.enqueue_call((redis_url, 300, 0.02), client=client)
    wait_until(lambda: len(_items(redis_client, handle.id)) >= 20, timeout=60, what="the job under way")

    began = time.monotonic()
    podman.run("stop", first, timeout=60)
    took = time.monotonic() - began
    assert podman.inspect(first, ".State.ExitCode") == "0", podman.logs(first)
    assert took < 10, f"podman stop took {took:.1f} s"
    assert handle.status == "queued"
    assert [d["cause"] for d in _deaths(handle)] == ["preempted:shutdown"]

    containers.start("300m", env={"RESILIENT_WORKERS": "1"})
    assert handle.result(timeout=60) == sum(range(300))
    assert _items(redis_client, handle.id) == list(range(300)), "an item was done twice or skipped"


def test_podman_stop_is_quick_while_redis_is_away(podman, tmp_path, request):
    """An idle container (supervisor and 2 workers) whose Redis has stopped: `podman stop` ends it, exit 0,
    within a couple of seconds, not at the stop timeout's SIGKILL."""
    info = ensure_server(tmp_path / "redis")  # a server of this test's own: it gets stopped
    request.addfinalizer(lambda: stop_server(info.data_dir))
    containers = Containers(podman, info.url)
    request.addfinalizer(containers.remove_all)
    name = containers.start("300m", env={"RESILIENT_WORKERS": "2"})
    with redis.Redis.from_url(info.url) as admin:
        wait_until(lambda: _workers(admin) == 2, timeout=60, what="the container's workers to register")
    stop_server(info.data_dir)  # (tests/integration/test_supervision.py stops one inside a blocked reap pass)

    began = time.monotonic()
    podman.run("stop", name, timeout=60)
    took = time.monotonic() - began
    assert podman.inspect(name, ".State.ExitCode") == "0", podman.logs(name)
    assert took < 5, f"podman stop took {took:.1f} s with Redis away"


def test_default_command_runs_n_workers_as_one_limit_group(podman, containers, client, redis_url, redis_client):
    """The image's default command with 3 workers in one 1000M container: a job growing to ~700M steps
    aside for its two small neighbours (never the other way round), is not charged for it, and all finish;
    the kernel kills nothing and nothing is parked."""
    name = containers.start("1000m", env={"RESILIENT_WORKERS": "3"})
    wait_until(lambda: _workers(redis_client) == 3, timeout=60, what="3 workers in the container")
    gate = [redis_url, "greedy-stepped-aside"]  # the small jobs run until the greedy one has stepped aside
    small = [testjobs.steady.enqueue_call((60, 60, 0.05, gate), client=client) for _ in range(2)]
    wait_until(lambda: all(h.status == "running" for h in small), timeout=30, what="small jobs running")
    greedy = testjobs.growing.enqueue_call((28, 25), client=client)

    wait_until(lambda: _deaths(greedy), timeout=120, what="the greedy job stepping aside")
    redis_client.set("greedy-stepped-aside", 1)
    assert greedy.result(timeout=180) == sum(range(28))
    assert [h.result(timeout=60) for h in small] == [60, 60]
    assert not [d for h in small for d in _deaths(h)], "a small neighbour was chosen"
    steps = _deaths(greedy)
    assert steps and {d["cause"] for d in steps} == {"preempted:memory"}, steps
    for step in steps:
        assert step["evidence"].get("for_neighbours") and len(step["evidence"]["neighbours"]) == 2, step
    assert client.store.job_fields(greedy.id)["free"] == str(len(steps)), "a step-aside for neighbours was charged"
    assert oom_kill_count(podman.cgroup(name)) == 0


# --- compose.yaml under podman-compose ------------------------------------------------------------------------

JOBS, ITEMS, DELAY = 4, 600, 0.02
INSIDE_URL = "redis://redis:6379/0"  # how the jobs, in the project's network, reach its Redis


@pytest.fixture
def compose(podman: Podman, tmp_path: Path) -> Iterator[tuple[Podman, list[str], str]]:
    """compose.yaml as it is, plus an override with what this machine lacks or the tests add: Redis built
    from Debian's package (no registry here) and tests/testjobs.py as a job module. `down -v` at the end."""
    project = f"resilient-test-{os.getpid()}"
    override = tmp_path / "compose.test.yaml"
    override.write_text(
        "services:\n"
        f"  redis:\n    image: {REDIS_IMAGE}\n"
        "  worker:\n"
        f"    volumes: ['{ROOT / 'tests' / 'testjobs.py'}:/app/testjobs.py:ro']\n"
        "    environment:\n      RESILIENT_JOB_MODULES: examples.squares testjobs\n")
    files = ["-p", project, "-f", str(ROOT / "compose.yaml"), "-f", str(override)]
    yield podman, files, project
    podman.run(*files, "down", "--volumes", "--timeout", "0", check=False, program="podman-compose", timeout=120)
    for kind, name in (("pod", f"pod_{project}"), ("network", f"{project}_default"),
                       ("volume", f"{project}_redis-data")):
        if podman.run(kind, "exists", name, check=False).returncode == 0:
            podman.run(kind, "rm", "--force", name, check=False)


def _compose_redis(podman: Podman, project: str) -> redis.Redis:
    """A client to the project's Redis from the host, through its address on the project's network."""
    address = podman.inspect(f"{project}_redis_1", "range .NetworkSettings.Networks}}{{.IPAddress}}{{end")
    connection = redis.Redis(host=address, port=6379)
    wait_until(lambda: _pings(connection), timeout=60, what="the compose Redis to answer")
    return connection


def _pings(connection: redis.Redis) -> bool:
    try:
        return bool(connection.ping())
    except redis.RedisError:  # not up yet (refused), or not there at all (this sandbox's proxy answers)
        return False


def test_compose_runs_jobs_replaces_a_killed_worker_and_down_loses_nothing(compose):
    """podman-compose up: Redis, two worker containers and a supervisor start and run jobs; a worker
    container killed with SIGKILL is started again and its jobs resume from their checkpoints; `down` and
    `up` again lose nothing: every job completes with every item done."""
    podman, files, project = compose
    podman.compose(*files, "up", "-d")
    connection = _compose_redis(podman, project)
    names = podman.out("ps", "--filter", f"label=io.podman.compose.project={project}", "--format", "{{.Names}}")
    assert sorted(names.split()) == sorted(f"{project}_{s}_1" for s in ("redis", "worker", "supervisor")) + [
        f"{project}_worker_2"], names
    wait_until(lambda: _workers(connection) == 4, timeout=90, what="2 containers x 2 workers registered")

    client = Client(connection)
    handles = [testjobs.count_items.enqueue_call((INSIDE_URL, ITEMS, DELAY), client=client) for _ in range(JOBS)]
    wait_until(lambda: all(len(_items(connection, h.id)) >= 30 for h in handles), timeout=60,
               what="every job under way")

    # SIGKILL to the container's init from outside, as the kernel or a crash would end it: `podman kill`
    # would count as stopped by the user, which restart: unless-stopped leaves stopped.
    killed = f"{project}_worker_1"
    os.kill(int(podman.inspect(killed, ".State.Pid")), signal.SIGKILL)
    wait_until(lambda: podman.inspect(killed, ".RestartCount") == "1" and _running(podman, killed),
               timeout=60, what="the killed worker container to be started again (restart: unless-stopped)")
    lost = wait_until(lambda: _lost(handles) if len(_lost(handles)) == 2 else None, timeout=60,
                      what="the jobs of the killed container's 2 workers to be reaped")
    wait_until(lambda: all(h.status in ("running", "completed") for h in lost), timeout=60,
               what="the reaped jobs to run again")

    podman.compose(*files, "down")
    podman.compose(*files, "up", "-d")
    connection = _compose_redis(podman, project)
    client = Client(connection)
    handles = [JobHandle(h.id, client.store) for h in handles]
    assert not [h.status for h in handles if h.status in ("failed", "parked")]
    assert [h.result(timeout=180) for h in handles] == [sum(range(ITEMS))] * JOBS
    for handle in handles:
        items = _items(connection, handle.id)
        assert sorted(set(items)) == list(range(ITEMS)), "an item was skipped"
        redone = sum(n - 1 for n in Counter(items).values())
        assert redone <= 50, f"{redone} items redone: more than a checkpoint interval or two ({_deaths(handle)})"


def _lost(handles: list[JobHandle]) -> list[JobHandle]:
    return [h for h in handles if "lost" in {d["cause"] for d in _deaths(h)}]


def _running(podman: Podman, name: str) -> bool:
    return podman.inspect(name, ".State.Running") == "true"
