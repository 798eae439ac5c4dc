"""The dashboard's HTTP side: the same data as `status --json` / `inspect --json`, actions only with the token,
read-only and loopback by default, assets served from the package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib.resources import files
from typing import Any

import pytest
import testjobs
from conftest import ROOT, cli_json, wait_until

from resilient.ops.admin import CANCELLED
from resilient.storage import keys
from resilient.web.server import Dashboard, WebOptions, serve_in_thread

TOKEN = "s3cret-token"


@pytest.fixture
def serve(client: Any) -> Iterator[Any]:
    """Start dashboards on free loopback ports (token as given); stopped at teardown."""
    started: list[Dashboard] = []

    def start(token: str | None = TOKEN) -> Dashboard:
        started.append(serve_in_thread(client, WebOptions(port=0, token=token)))
        return started[-1]

    yield start
    for dashboard in started:
        dashboard.stop()


def call(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            body = reply.read()
            kind = reply.headers["Content-Type"]
            return reply.status, json.loads(body) if kind.startswith("application/json") else body.decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def parked_job(client: Any, redis_url: str, reason: str = "parked by the test") -> str:
    """A job parked the way a worker parks one (its RQ record kept, as the worker keeps it)."""
    handle = testjobs.side_effect.enqueue_call((redis_url, "ran"), client=client)
    client.connection.lrem(keys.rq_queue("tests"), 0, handle.id)  # no worker in these tests; keep it out of line
    _, attempt = client.store.begin_attempt(handle.id, "w", "h")
    client.store.park(attempt, reason)
    return handle.id


def test_api_gives_what_status_and_inspect_give(client, redis_url, serve):
    """/api/status and /api/jobs/ID carry every field `status --json` and `inspect --json` print."""
    job_id = parked_job(client, redis_url)
    base = serve().url
    status, overview = call(base + "api/status")
    assert status == 200
    assert set(cli_json(redis_url, "status")) <= set(overview)
    assert overview["parked"] == 1 and overview["deaths_by_cause"] == {}
    status, job = call(base + f"api/jobs/{job_id}")
    assert status == 200
    inspected = cli_json(redis_url, "inspect", job_id)
    assert set(inspected) <= set(job) and set(inspected["memory"]) <= set(job["memory"])
    assert job["status"] == "parked" and job["parked_reason"] == "parked by the test"
    status, held = call(base + "api/held")
    assert [j["id"] for j in held["parked"]] == [job_id] and held["parked_count"] == 1
    assert call(base + "api/jobs/no-such-job")[0] == 404


def test_delayed_retries_are_listed(client, redis_url, serve):
    """A retry waiting out its backoff is listed with when it is due, and counted on its queue."""
    handle = testjobs.side_effect.enqueue_call((redis_url, "ran"), client=client)
    client.connection.lrem(keys.rq_queue("tests"), 0, handle.id)
    _, attempt = client.store.begin_attempt(handle.id, "w", "h")
    client.store.mark_requeued(attempt, "failed", "tests", delay=60)
    base = serve().url
    held = call(base + "api/held")[1]
    assert [job["id"] for job in held["delayed"]] == [handle.id] and held["delayed_count"] == 1
    assert held["delayed"][0]["due_at"] > client.store.server_ms() + 50_000
    assert [q["delayed"] for q in call(base + "api/status")[1]["queues"] if q["name"] == "tests"] == [1]


def test_actions_need_the_token(client, redis_url, serve):
    """Without the token (or with a wrong one) a requeue is refused and the job stays parked; with it, it is back in its queue."""
    job_id = parked_job(client, redis_url)
    url = serve().url + f"api/jobs/{job_id}/requeue"
    status, body = call(url, "POST")
    assert status == 403 and "token" in body["error"]
    assert call(url, "POST", {"X-Resilient-Token": "wrong"})[0] == 403
    assert client.store.job_fields(job_id)["status"] == "parked"
    status, body = call(url, "POST", {"Authorization": f"Bearer {TOKEN}"})
    assert (status, body["message"]) == (200, f"job {job_id} requeued on tests")
    assert client.store.job_fields(job_id)["status"] == "queued"
    assert job_id.encode() in client.connection.lrange(keys.rq_queue("tests"), 0, -1)


def test_read_only_without_a_token(client, redis_url, serve):
    """A dashboard started with no token refuses every action, saying how to allow them."""
    job_id = parked_job(client, redis_url)
    base = serve(token=None).url
    assert call(base + "api/config")[1] == {"actions": False}
    for action in ("requeue", "restart", "cancel"):
        status, body = call(base + f"api/jobs/{job_id}/{action}", "POST", {"X-Resilient-Token": TOKEN})
        assert status == 403 and "read-only" in body["error"] and "RESILIENT_WEB_TOKEN" in body["error"]
    assert client.store.job_fields(job_id)["status"] == "parked"


def test_cancel_ends_a_parked_job(client, redis_url, serve):
    """Cancel turns a parked job into a failed one, out of the parked list, its keys still expiring; a job not parked is left alone."""
    job_id = parked_job(client, redis_url)
    url = serve().url + f"api/jobs/{job_id}/cancel"
    status, body = call(url, "POST", {"X-Resilient-Token": TOKEN})
    assert (status, body["message"]) == (200, f"job {job_id} cancelled")
    fields = client.store.job_fields(job_id)
    assert (fields["status"], fields["error"]) == ("failed", CANCELLED) and "parked_reason" not in fields
    assert client.store.parked_count() == 0
    assert client.store.events(job_id)[-1]["type"] == "cancelled"
    assert all(client.connection.ttl(key) > 0 for key in (keys.job(job_id), keys.events(job_id)))
    status, body = call(url, "POST", {"X-Resilient-Token": TOKEN})
    assert status == 200 and "not parked" in body["message"]


def test_restart_drops_the_checkpoint(client, redis_url, serve):
    """Restart from scratch requeues the job without its checkpoint."""
    handle = testjobs.side_effect.enqueue_call((redis_url, "ran"), client=client)
    client.connection.lrem(keys.rq_queue("tests"), 0, handle.id)
    _, attempt = client.store.begin_attempt(handle.id, "w", "h")
    client.store.save_checkpoint(attempt, b"\x80")
    client.store.park(attempt, "test")
    status, _ = call(serve().url + f"api/jobs/{handle.id}/restart", "POST", {"X-Resilient-Token": TOKEN})
    assert status == 200 and client.store.load_checkpoint(handle.id) is None


def test_pages_and_assets_come_from_the_package(serve):
    """Every page is the packaged shell; its script and style are served; nothing points to another host."""
    base = serve().url
    for page in ("", "job/abc", "parked", "worker/w1"):
        status, body = call(base + page)
        assert status == 200 and '<script src="/assets/app.js">' in body
    for name in ("app.js", "style.css"):
        status, body = call(base + f"assets/{name}")
        assert status == 200
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", body), f"{name} refers to another host"
    assert (files("resilient.web") / "assets" / "index.html").is_file()
    assert call(base + "assets/../server.py")[0] == 404


def test_refuses_other_host_names_on_loopback(serve):
    """Bound to 127.0.0.1, a request naming another host (DNS rebinding) is refused."""
    base = serve().url
    status, body = call(base + "api/status", headers={"Host": "attacker.example:8321"})
    assert status == 403 and "127.0.0.1" in body["error"]
    assert call(base + "api/status", headers={"Host": "localhost"})[0] == 200


def _first_line_url(process: subprocess.Popen[str], pattern: str) -> str:
    assert process.stdout is not None
    for line in process.stdout:
        match = re.search(pattern, line)
        if match:
            return match.group(1)
    pytest.fail(f"no line matching {pattern!r}")


@pytest.mark.parametrize("command", [["web", "--port", "0"], ["supervisor", "--web-port", "0"]])
def test_cli_serves_on_loopback(redis_url, tmp_path, command):
    """`resilient web` and `resilient supervisor --web-port` serve the dashboard on 127.0.0.1 by default, with a token file."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    option = "--token-file" if command[0] == "web" else "--web-token-file"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}"}
    process = subprocess.Popen([sys.executable, "-m", "resilient", "--redis-url", redis_url, *command, option,
                                str(token_file), *(["--log-format", "text"] if command[0] == "supervisor" else [])],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = _first_line_url(process, r"dashboard on (http://127\.0\.0\.1:\d+/)")
        assert call(url + "api/config")[1] == {"actions": True}
        assert wait_until(lambda: call(url + "api/status")[0] == 200, what="the dashboard answering")
    finally:
        process.terminate()
        process.wait(10)
        assert process.stdout is not None
        process.stdout.close()


def test_unreadable_token_file_is_one_line(redis_url, tmp_path):
    """A token file that cannot be read stops `resilient web` with one line saying what to do."""
    run = subprocess.run([sys.executable, "-m", "resilient", "--redis-url", redis_url, "web", "--token-file",
                          str(tmp_path / "missing")], capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0 and "RESILIENT_WEB_TOKEN" in run.stderr


def test_port_in_use_is_one_line(redis_url, serve):
    """`resilient web` on a port already taken stops with one line saying to pick another."""
    taken = serve().server_address[1]
    run = subprocess.run([sys.executable, "-m", "resilient", "--redis-url", redis_url, "web", "--port", str(taken)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0 and "pick another port" in run.stderr
