"""Workers under one memory limit show as a group in `status --json`, `status` and `top`: its limit, usage and
lines, its members with their jobs and horses' RSS, the jobs waiting for headroom, its step-asides."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import cli_json
from rich.console import Console
from rq import Worker
from test_json_views import WORKER_FIELDS

from resilient.ops import report, top
from resilient.storage import keys
from resilient.storage.codec import MsgpackSerializer

MiB = 1 << 20
GROUP, OTHER, LONE = "0123456789abcdef", "fedcba9876543210", "1111111111111111"
GROUP_FIELDS = {"id", "host", "limit", "usage", "soft", "hard", "level", "members", "waiting", "step_asides"}


def _worker(redis_client, name: str, **published: str | int) -> None:
    """A registered RQ worker and the status hash ResilientWorker._beat writes for it (alone in its limit
    unless `group` is given)."""
    Worker(["tests"], connection=redis_client, name=name, serializer=MsgpackSerializer).register_birth()
    status = {"rss": 100 * MiB, "limit": 1000 * MiB, "limit_source": "cgroup v1 /x", "level": "ok", "soft": 0.7,
              "hard": 0.85, "horse_rss": 0, "group": "", "step_asides": 0, "pressure_waits": 0,
              "host": "h", "pid": os.getpid(), "job": "", "headroom_waits": 0, "waiting_job": "",
              "waiting_expected": 0, **published}
    redis_client.hset(keys.worker_status(name), mapping=status)


@pytest.fixture
def two_groups(client, redis_client):
    """Two limit groups, a worker alone in a cgroup of its own (`g`) and one with no cgroup (`solo`). In the
    first group `a` runs `big` (300M horse) and `b` runs `small`; `c` waits for `next` (expected 250M); `d`
    still names `gone`, a job another worker has taken since. In the second, `e` waits for `later`
    (nothing known of its peak) next to `f`."""
    for job_id in ("big", "small", "next", "gone", "later", "alone"):
        client.store.create_job(job_id, "testjobs.steady", "tests", 10)
    for job_id in ("big", "small", "gone", "alone"):
        client.store.begin_attempt(job_id, "elsewhere", "h")
    shared = {"group": GROUP, "limit": 600 * MiB, "step_asides": 2}
    _worker(redis_client, "a", **shared, rss=430 * MiB, job="big", horse_rss=300 * MiB, level="soft")
    _worker(redis_client, "b", **{**shared, "step_asides": 3}, rss=420 * MiB, job="small", horse_rss=60 * MiB)
    _worker(redis_client, "c", **shared, rss=425 * MiB, waiting_job="next", waiting_expected=250 * MiB,
            headroom_waits=4, hard=0.8)
    _worker(redis_client, "d", **shared, rss=425 * MiB, waiting_job="gone")
    _worker(redis_client, "e", group=OTHER, limit=300 * MiB, rss=50 * MiB, waiting_job="later")
    _worker(redis_client, "f", group=OTHER, limit=300 * MiB, rss=50 * MiB)
    _worker(redis_client, "g", group=LONE, limit=300 * MiB, rss=50 * MiB, job="alone", horse_rss=20 * MiB)
    _worker(redis_client, "solo", rss=80 * MiB, job="alone", horse_rss=40 * MiB)


def test_status_json_shows_each_group_with_its_members_and_waiting_jobs(redis_url, two_groups):
    """status --json lists each limit group once: its usage against L with the soft and hard lines in
    bytes (the most cautious of its members' readings), every member with its job and horse RSS, the jobs
    waiting for headroom that are still queued, and its step-asides; a worker alone is in no group."""
    status = cli_json(redis_url, "status")
    groups = {group["id"]: group for group in status["groups"]}
    assert set(groups) == {GROUP, OTHER, LONE}
    group = groups[GROUP]
    assert GROUP_FIELDS <= set(group)
    assert (group["limit"], group["usage"]) == (600 * MiB, 430 * MiB)
    assert (group["soft"], group["hard"]) == (int(0.7 * 600 * MiB), int(0.8 * 600 * MiB))
    assert group["level"] == "soft" and group["step_asides"] == 3
    members = {member["worker"]: member for member in group["members"]}
    assert set(members) == {"a", "b", "c", "d"}
    assert (members["a"]["job"], members["a"]["horse_rss"]) == ("big", 300 * MiB)
    assert (members["b"]["job"], members["b"]["horse_rss"]) == ("small", 60 * MiB)
    assert members["c"]["job"] is None and members["c"]["horse_rss"] == 0
    assert group["waiting"] == [{"job": "next", "expected": 250 * MiB, "worker": "c"}]
    assert groups[OTHER]["waiting"] == [{"job": "later", "expected": None, "worker": "e"}]
    assert [member["worker"] for member in groups[OTHER]["members"]] == ["e", "f"]
    assert [(m["worker"], m["job"]) for m in groups[LONE]["members"]] == [("g", "alone")]

    workers = {worker["name"]: worker for worker in status["workers"]}
    assert set(workers) == {"a", "b", "c", "d", "e", "f", "g", "solo"}
    assert all(WORKER_FIELDS <= set(w) for w in workers.values())
    assert workers["solo"]["group"] is None and workers["solo"]["horse_rss"] == 40 * MiB
    assert workers["c"]["waiting_for"] == {"job": "next", "expected": 250 * MiB}
    assert workers["a"]["waiting_for"] is None


def test_plain_status_and_top_show_one_line_per_group_and_one_per_member(client, redis_url, two_groups):
    """`status` and `top` print each shared group's usage against its limit, then its members: the job
    each horse runs with its share of the limit, or the job a worker waits for headroom for. A worker
    alone under its limit has only its row under Workers."""
    env = {**os.environ, "COLUMNS": "200"}
    plain = subprocess.run([sys.executable, "-m", "resilient", "--redis-url", redis_url, "status"], env=env,
                           capture_output=True, text=True, timeout=30, check=True).stdout
    screen = Console(record=True, width=200)
    screen.print(top.render(report.status(client.connection, client.store), top.Rates(), 0.0))
    for text in (plain, screen.export_text()):
        rows = {row[0]: " | ".join(row) for row in _rows(text, "Limit groups")}
        assert list(rows) == ["group 01234567", "└ a", "└ b", "└ c", "└ d", "group fedcba98", "└ e", "└ f"]
        group = rows["group 01234567"]
        assert "430.0 MiB / 600.0 MiB (72%)" in group and "soft" in group and "2 running" in group
        assert "1 job" in group and group.endswith("| 3")
        assert "big" in rows["└ a"] and "300.0 MiB (50%)" in rows["└ a"]
        assert "next (~250.0 MiB)" in rows["└ c"] and "later" in rows["└ e"]
    assert "soft 420.0 MiB, hard 480.0 MiB" in plain


def _rows(text: str, title: str) -> list[list[str]]:
    """The body rows of the table titled `title`, each as its stripped cells."""
    lines = text[text.index(title):].splitlines()
    body = lines[lines.index(next(line for line in lines if line.startswith("┡"))) + 1:]
    rows = []
    for line in body:
        if line.startswith("└"):
            break
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return rows
