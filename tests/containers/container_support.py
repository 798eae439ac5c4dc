"""Podman for the container tests: the prerequisites (skip, or fail when they are required), the project's
image built from workers/Dockerfile on the local base, and containers removed by name whatever happens.

.ci/setup-containers installs podman, podman-compose and the base images; these helpers only use them.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from resilient.memory.cgroup import Cgroup, find_cgroup

ROOT = Path(__file__).resolve().parents[2]
REQUIRE_ENV = "RESILIENT_REQUIRE_CONTAINER_TESTS"
DEFAULT_CONF = "/etc/containers/resilient-ci.conf"  # written by .ci/setup-containers
BASE_IMAGE = "localhost/debian-python:bookworm"
REDIS_IMAGE = "localhost/redis-debian:bookworm"
IMAGE = "localhost/resilient-worker:local"  # the name compose.yaml gives the image it builds
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_names = itertools.count()


def skip_or_fail(reason: str) -> None:
    """Skip, or fail when RESILIENT_REQUIRE_CONTAINER_TESTS=1 (a CI that must run them)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but the container tests cannot run: {reason}")
    pytest.skip(f"container tests cannot run: {reason}")


class Podman:
    """podman (and podman-compose) with this project's containers.conf, each command with a deadline."""

    def __init__(self, workdir: Path) -> None:
        self.env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", DEFAULT_CONF)}
        # podman's conmon runs in the caller's directory and leaves an empty file `oom` there when the kernel
        # OOM-kills in its container: keep that out of the checkout
        self.workdir = workdir

    def missing(self) -> str | None:
        """What is missing to run containers here, in words; None when nothing is."""
        if shutil.which("podman") is None:
            return "podman is not installed (run .ci/setup-containers)"
        if shutil.which("podman-compose") is None:
            return "podman-compose is not installed (run .ci/setup-containers)"
        if not Path(self.env["CONTAINERS_CONF"]).is_file():
            return f"{self.env['CONTAINERS_CONF']} is missing (run .ci/setup-containers)"
        for image in (BASE_IMAGE, REDIS_IMAGE):
            if self.run("image", "exists", image, check=False).returncode != 0:
                return f"the image {image} is missing (run .ci/setup-containers)"
        return None

    def run(self, *args: str, check: bool = True, timeout: float = 120,
            program: str = "podman") -> subprocess.CompletedProcess[str]:
        done = subprocess.run([program, *args], capture_output=True, text=True, env=self.env, timeout=timeout,
                              cwd=self.workdir)
        if check and done.returncode != 0:
            pytest.fail(f"`{program} {' '.join(args)}` exited {done.returncode}: {done.stderr[-2000:]}")
        return done

    def out(self, *args: str) -> str:
        return self.run(*args).stdout.strip()

    def compose(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self.run(*args, timeout=timeout, program="podman-compose")

    def build_image(self) -> None:
        """workers/Dockerfile as it is, with only its base swapped for the local one. Podman's layer cache
        makes this a second or two when nothing changed, and rebuilds from the first changed COPY."""
        ca = ["--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"] if Path(CA_BUNDLE).is_file() else []
        self.run("build", "--quiet", "--from", BASE_IMAGE, "--network", "host", "--format", "docker", *ca,
                 "-f", str(ROOT / "workers" / "Dockerfile"), "-t", IMAGE, str(ROOT), timeout=600)

    def inspect(self, name: str, field: str) -> str:
        return self.out("inspect", "--format", "{{" + field + "}}", name)

    def cgroup(self, name: str) -> Cgroup:
        """The container's memory cgroup, as the host sees it (its oom_kill counter is the evidence)."""
        group = find_cgroup(int(self.inspect(name, ".State.Pid")))
        assert group is not None, f"no memory cgroup for container {name}"
        return group

    def logs(self, name: str) -> str:
        done = self.run("logs", name, check=False)
        return (done.stdout + done.stderr)[-4000:]


class Containers:
    """Worker containers on the host network, named resilient-test-PID-N; all removed by remove_all()."""

    def __init__(self, podman: Podman, redis_url: str) -> None:
        self.podman = podman
        self.redis_url = redis_url
        self.names: list[str] = []

    def start(self, memory: str, *args: str, env: dict[str, str] | None = None, stop_timeout: int = 30) -> str:
        """`podman run -d` of the image (default command unless `args`), with tests/testjobs.py as a job
        module and a memory limit without swap, as the README shows."""
        name = f"resilient-test-{os.getpid()}-{next(_names)}"
        self.names.append(name)
        environment = {"REDIS_URL": self.redis_url, "RESILIENT_JOB_MODULES": "testjobs", **(env or {})}
        self.podman.run(
            "run", "-d", "--name", name, "--network", "host", "--memory", memory, "--memory-swap", memory,
            "--stop-timeout", str(stop_timeout),
            "--volume", f"{ROOT / 'tests' / 'testjobs.py'}:/app/testjobs.py:ro",
            *[f"--env={key}={value}" for key, value in environment.items()], IMAGE, *args)
        return name

    def running(self, name: str) -> bool:
        return self.podman.inspect(name, ".State.Running") == "true"

    def remove_all(self) -> None:
        for name in self.names:
            self.podman.run("rm", "--force", "--time", "0", name, check=False)
