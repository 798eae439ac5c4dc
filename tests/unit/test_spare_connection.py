"""The spare connection a worker opens for its next horse, with a real fork and a real server (this also pins
the redis-py private names storage/spare.py relies on: if they change, the horse stops using the spare)."""

from __future__ import annotations

import os
import socket

import pytest
import redis

from resilient.storage import spare as spare_module
from resilient.storage.connection import connect
from resilient.storage.spare import SpareConnection


def _client_id_in_a_horse(client: redis.Redis, spare: SpareConnection) -> tuple[int, int]:
    """Fork as the worker does: the child adopts the spare and reports the CLIENT ID its first command ran
    on and the number of connections its pool made; the parent closes its copy right after the fork."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            spare.adopt()
            client_id = client.client_id()
            client.ping()  # and the connection is given back to the pool and used again
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
