"""The spare connection a worker opens for its next horse, with a real fork and a real server (this also pins
the redis-py private names storage/spare.py relies on: if they change, the horse stops using the spare)."""

from __future__ import annotations

import os
import socket
import time

import pytest
import redis

from resilient.storage import spare as spare_module
from resilient.storage.connection import connect
from resilient.storage.spare import SpareConnection


def _client_id_in_a_horse(client: redis.Redis, spare: SpareConnection) -> tuple[int, int]:
    """Fork as the worker does: the child adopts the spare, runs a command on it, and reports the CLIENT ID
    of its next one and the number of connections its pool made; the parent closes its copy right after
    the fork."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            spare.adopt()
            # first a reply that takes 1 s: the spare waits as long as the client's own connections (its
            # 0.5 s bound is for the worker making it); a timeout would reconnect it, under a new CLIENT ID
            client.blpop(["nothing-here"], timeout=1)
            client_id = client.client_id()  # and the connection is given back to the pool and used again
            made = client.connection_pool._created_connections
            os.write(write_end, f"{client_id} {made}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    spare.handed_over()
    with os.fdopen(read_end) as reader:
        reply = reader.read()
    os.waitpid(pid, 0)
    client_id, made = reply.split()
    return int(client_id), int(made)


def _spare_id(client: redis.Redis, spare: SpareConnection) -> int:
    connection = spare._connection
    assert connection is not None, "no spare was made"
    connection.send_command("CLIENT", "ID")
    return int(connection.read_response())


def test_a_horse_runs_its_first_command_on_the_spare_and_the_worker_keeps_its_own(redis_url):
    client = connect(redis_url)
    client.ping()
    spare = SpareConnection(client)
    spare.prepare()
    expected = _spare_id(client, spare)

    assert _client_id_in_a_horse(client, spare) == (expected, 1)
    assert client.ping()  # the worker's own connection is untouched
    assert expected not in [int(c["id"]) for c in client.client_list()], "the spare outlived the horse"


def test_an_old_spare_is_not_used(redis_url, monkeypatch):
    """The server may have closed an idle connection: past MAX_AGE the horse connects for itself."""
    client = connect(redis_url)
    spare = SpareConnection(client)
    spare.prepare()
    stale = _spare_id(client, spare)
    monkeypatch.setattr(spare_module, "MAX_AGE", -1.0)

    client_id, made = _client_id_in_a_horse(client, spare)
    assert client_id != stale and made == 1


def test_no_server_leaves_no_spare_after_one_try():
    """The worker makes the spare while it watches a horse: with Redis away it must not sit in the client's
    retries (~15 s with connect()'s), it tries once."""
    client = connect("redis://127.0.0.1:1/0")  # nothing listens on port 1
    spare = SpareConnection(client)
    tries = []
    real_connect = socket.socket.connect
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", lambda sock, address: tries.append(address) or real_connect(sock, address))
        spare.prepare()
    assert spare._connection is None and len(tries) == 1
    spare.adopt()  # nothing to adopt: the horse connects itself, as without a spare


def test_a_server_that_never_answers_leaves_no_spare_soon():
    """The worker makes the spare while it watches a horse: a server that takes the connection but never
    answers HELLO must not hold it for the client's 30 s reply timeout."""
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel completes the handshake; nobody answers
    try:
        spare = SpareConnection(connect(f"redis://127.0.0.1:{silent.getsockname()[1]}/0"))
        began = time.monotonic()
        spare.prepare()
        assert spare._connection is None
        assert time.monotonic() - began < 3, "waited on a server that never answers"
    finally:
        silent.close()
