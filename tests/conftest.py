"""Shared fixtures: one embedded server per test session (per xdist worker), emptied before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from resilient.storage.server import ServerInfo, ensure_server, stop_server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """A real server started the way commands start the embedded default; stopped at session end."""
    info = ensure_server(tmp_path_factory.mktemp("redis"))
    yield info
    stop_server(info.data_dir)


@pytest.fixture
def redis_url(redis_server: ServerInfo) -> str:
    """The session server's URL, with every key removed so each test starts empty."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def cli_json(url: str, *args: str) -> Any:
    """What `resilient ARGS --json` prints, decoded (the command must succeed)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}"}
    run = subprocess.run([sys.executable, "-m", "resilient", "--redis-url", url, *args, "--json"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class WorkerProcess:
    """A `resilient worker` subprocess; stopped by PID at teardown."""

    def __init__(self, url: str, args: list[str], cwd: Path, cgroup: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}", "REDIS_URL": url, **(env or {})}
        self.log_path = cwd / f"worker-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "resilient", "worker", *args], env=env, cwd=cwd,
            stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=None if cgroup is None else lambda: (cgroup / "cgroup.procs").write_text(str(os.getpid())),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM first (so the worker removes its cgroup), SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


@pytest.fixture
def start_worker(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers for tests/testjobs.py (extra CLI flags as arguments)."""
    started: list[WorkerProcess] = []

    def start(*flags: str, modules: tuple[str, ...] = ("testjobs",), cgroup: Path | None = None,
              url: str | None = None, env: dict[str, str] | None = None) -> WorkerProcess:
        """`cgroup`: the directory of a memory cgroup the worker starts in (before Python does); `url`: another
        Redis than the session's (a redis+sentinel:// URL, say); `env`: more environment (RESILIENT_...)."""
        worker = WorkerProcess(url or redis_url, [*modules, *flags], tmp_path, cgroup, env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def client(redis_url: str) -> Any:
    from resilient import Client

    return Client.from_url(redis_url)
