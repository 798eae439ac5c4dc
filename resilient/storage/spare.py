"""A Redis connection the worker opens while a horse runs, for the next horse to use.

A forked horse cannot use its parent's sockets, so redis-py opens a new connection on its first command:
connect, HELLO with AUTH, CLIENT SETINFO. That was about a fifth of a trivial job's cycle (in the horse,
~3-5 ms of 18 on the 2-core test machine). The worker makes that connection for the next horse while the
current one runs, and the horse adopts it into its pool. redis-py has no public call to hand a pool a
connection; the private names used here are pinned in tests/unit/test_spare_connection.py.
"""

from __future__ import annotations

import contextlib
import os
import time

import redis

from .connection import impatient_options

MAX_AGE = 10.0  # seconds: an older spare is not handed over (the server may close idle connections: `timeout`)
CONNECT_TIMEOUT = 0.5  # one try, this long at most for each step: the worker makes the spare while it watches a horse


class SpareConnection:
    """One connected, authenticated connection for the next forked horse of a worker (plain pools only: a
    Sentinel pool forgets its primary in the child and would drop the connection at once)."""

    def __init__(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        self._pool = pool if type(pool) is redis.ConnectionPool else None
        self._connection: redis.Connection | None = None
        self._made_at = 0.0

    def prepare(self) -> None:
        """In the worker: open the spare, if there is none; a failure leaves none (the horse connects itself)."""
        pool = self._pool
        if pool is None or self._connection is not None:
            return
        connection = pool.connection_class(**pool.connection_kwargs)
        impatient = impatient_options(CONNECT_TIMEOUT)  # for the connect and the HELLO/AUTH replies alike
        patient = {name: getattr(connection, name) for name in impatient}
        for name, value in impatient.items():
            setattr(connection, name, value)
        try:
            connection.connect()
        except (redis.RedisError, OSError):
            connection.disconnect()
            return
        for name, value in patient.items():  # the horse's own, for its replies and should it reconnect
            setattr(connection, name, value)
        connection.update_current_socket_timeout(-1)  # the socket's timeout back to socket_timeout
        self._connection, self._made_at = connection, time.monotonic()

    def adopt(self) -> None:
        """In a horse, before its first command: put the spare in the pool it inherited, in place of the
        parent's connections that redis-py forgets after a fork."""
        connection, pool = self._connection, self._pool
        self._connection = None
        if connection is None or pool is None:
            return
        if time.monotonic() - self._made_at > MAX_AGE:
            _close_copy(connection)
            return
        pool._checkpid()  # the reset redis-py makes in a forked child, done now
        connection.pid = os.getpid()  # the pool owns the connections made by its own process
        with pool._lock:
            pool._created_connections += 1
            pool._available_connections.append(connection)

    def handed_over(self) -> None:
        """In the worker, after a fork: close its copy of the spare. The horse keeps its own copy open; no
        shutdown(), which would end the connection for the horse too."""
        connection, self._connection = self._connection, None
        if connection is not None:
            _close_copy(connection)


def _close_copy(connection: redis.Connection) -> None:
    """Close this process's copy of a connection's socket without ending the connection for the other."""
    connection.pid = -1  # redis-py shuts a socket down (for every process) only in the one that opened it
    with contextlib.suppress(OSError):
        connection.disconnect()  # type: ignore[no-untyped-call]  # untyped in redis-py
