"""The dashboard in a real headless browser, over a real worker whose horse is killed once."""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

import pytest
import testjobs
from browser_support import browser_fixture, page_of_fixture  # noqa: F401  (fixtures: browser, page_of)
from conftest import wait_until
from rq import Worker

from resilient.storage import keys
from resilient.storage.codec import MsgpackSerializer
from resilient.web.server import WebOptions, serve_in_thread

pytestmark = pytest.mark.browser
TOKEN = "browser-test-token"
LIVE_S = 2.0  # what the issue asks: a change shows on the page within 2 s, without a reload


@pytest.fixture
def dashboard(client: Any) -> Any:
    served = serve_in_thread(client, WebOptions(port=0, token=TOKEN))
    yield served
    served.stop()


def _done_on_page(page: Any) -> int:
    text = page.locator("[data-fact=progress]").inner_text()
    match = re.search(r"(\d+)(/\d+| items)", text)
    return int(match.group(1)) if match else -1


def _horse(client: Any, job_id: str, attempt: int) -> int:
    fields = client.store.job_fields(job_id)
    return int(fields["horse_pid"]) if int(fields.get("attempt", 0)) == attempt and fields.get("horse_pid") else 0


def test_job_page_shows_progress_death_and_memory(client, redis_url, start_worker, dashboard, page_of, tmp_path):
    """A job killed once: its page shows progress advancing, the death with its cause within 2 s, and the memory chart with samples and the death marked; the overview lists it, and links to its worker's page."""
    start_worker("--memory-limit", "512M")
    handle = testjobs.iterate_items.enqueue_call((redis_url, 2000, 0.02), client=client)
    overview = page_of()
    overview.goto(dashboard.url)
    page = page_of()
    page.goto(dashboard.url + f"job/{handle.id}")
    page.wait_for_selector("[data-fact=progress]")
    first = wait_until(lambda: _done_on_page(page) > 0 and _done_on_page(page), what="progress on the page")
    wait_until(lambda: _done_on_page(page) > first, timeout=5, what="progress advancing without a reload")

    wait_until(lambda: len(client.store.memory_samples(handle.id, 1)) >= 2, what="two memory samples of attempt 1")
    horse = wait_until(lambda: _horse(client, handle.id, 1), what="the horse's pid")
    os.kill(horse, signal.SIGKILL)
    killed_at = time.monotonic()
    death = page.wait_for_selector(".death[data-cause=killed]", timeout=LIVE_S * 1000)
    shown_after = time.monotonic() - killed_at
    assert death is not None and "killed with SIGKILL" in death.inner_text()  # the cause, in words
    assert shown_after <= LIVE_S, f"the death showed {shown_after:.2f} s after the kill"
    overview.wait_for_selector(".chips :text('killed × 1')", timeout=LIVE_S * 1000)  # the overview, open all along

    page.wait_for_selector("#memory-chart g.death-mark[data-cause=killed]", timeout=LIVE_S * 1000)
    assert page.locator("#memory-chart circle.sample").count() >= 2
    assert page.locator("#memory-chart line.threshold").count() == 3  # L, hard, soft
    wait_until(lambda: _horse(client, handle.id, 2), what="attempt 2 running")
    resumed = _done_on_page(page)
    wait_until(lambda: _done_on_page(page) > resumed, timeout=5, what="attempt 2's progress on the page")
    page.screenshot(path=str(tmp_path / "job.png"), full_page=True)

    row = overview.wait_for_selector(f"tr[data-job='{handle.id}']")
    assert row is not None and "iterate_items" in row.inner_text()
    overview.screenshot(path=str(tmp_path / "overview.png"), full_page=True)
    overview.locator(f"tr[data-job='{handle.id}'] td:last-child a").click()  # its worker
    overview.wait_for_selector("#worker")
    assert "512.0 MiB" in overview.locator("#worker").inner_text() and handle.id in overview.inner_text("main")
    overview.screenshot(path=str(tmp_path / "worker.png"), full_page=True)


def _parked_job(client: Any, redis_url: str, key: str) -> str:
    """A job parked the way a worker parks one; requeued, it runs for real and logs to `key`."""
    handle = testjobs.side_effect.enqueue_call((redis_url, key), client=client)
    client.connection.lrem(keys.rq_queue("tests"), 0, handle.id)  # taken off its queue, as a worker takes it
    _, attempt = client.store.begin_attempt(handle.id, "w", "h")
    client.store.park(attempt, "OOM-killed 3 times at checkpoint 0 (made up by the test)")
    return handle.id


def test_requeue_button_needs_the_token(client, redis_url, redis_client, start_worker, dashboard, page_of,
                                        tmp_path):
    """On the parked page, Requeue without the token is refused and the job stays parked; with the token entered once, the job runs to completion."""
    job_id = _parked_job(client, redis_url, "ran:requeued")
    page = page_of()
    page.goto(dashboard.url + "parked")
    button = page.locator(f"tr[data-job='{job_id}'] button[data-action=requeue]")
    button.click()
    page.wait_for_selector(".flash.error")
    assert "refused" in page.locator("#flash").inner_text()
    assert client.store.job_fields(job_id)["status"] == "parked"
    page.screenshot(path=str(tmp_path / "refused.png"), full_page=True)

    page.fill("#token", TOKEN)
    page.click("#token-form button")
    page.wait_for_selector("text=actions: token set")
    start_worker()
    page.locator(f"tr[data-job='{job_id}'] button[data-action=requeue]").click()
    page.wait_for_selector(f".flash:not(.error):has-text('job {job_id} requeued on tests')")
    wait_until(lambda: client.store.job_fields(job_id)["status"] == "completed", what="the requeued job completing")
    assert redis_client.lrange("ran:requeued", 0, -1) == [b"ran"]
    page.wait_for_selector(f"tr[data-job='{job_id}']", state="detached", timeout=LIVE_S * 1000)


MiB = 1 << 20
GROUP = "0123456789abcdef"


@pytest.fixture
def shared_limit(client: Any, redis_client: Any) -> None:
    """Two registered workers publishing one limit group (as ResilientWorker's beat does): `a` runs `big`,
    `b` waits for headroom for `next` (expected 250 MiB); and `solo`, alone under its limit."""
    for job_id in ("big", "next"):
        client.store.create_job(job_id, "testjobs.steady", "tests", 10)
    client.store.begin_attempt("big", "a", "h")
    base = {"rss": 430 * MiB, "limit": 600 * MiB, "limit_source": "cgroup v2 /x", "level": "soft", "soft": 0.7,
            "hard": 0.85, "horse_rss": 0, "group": GROUP, "step_asides": 2, "host": "h", "pid": os.getpid(),
            "job": "", "waiting_job": "", "waiting_expected": 0}
    published = {"a": {"job": "big", "horse_rss": 300 * MiB}, "b": {"waiting_job": "next", "waiting_expected": 250 * MiB},
                 "solo": {"group": "", "rss": 80 * MiB, "level": "ok"}}
    for name, own in published.items():
        Worker(["tests"], connection=redis_client, name=name, serializer=MsgpackSerializer).register_birth()
        redis_client.hset(keys.worker_status(name), mapping={**base, **own})


def test_limit_groups_on_the_overview_and_worker_page(shared_limit, dashboard, page_of, tmp_path):
    """Workers under one limit show as a group on the overview (usage bar, members, what they wait for); a member's page names its group."""
    page = page_of()
    page.goto(dashboard.url)
    page.wait_for_selector("#groups", state="attached")
    groups = page.locator("section.card", has=page.locator("#groups")).inner_text()
    assert "group 01234567" in groups and "430.0 MiB / 600.0 MiB" in groups and "solo" not in groups
    assert "big" in groups and "300.0 MiB" in groups and "next (~250.0 MiB)" in groups and "1 waiting" in groups
    page.screenshot(path=str(tmp_path / "groups.png"), full_page=True)
    page.goto(dashboard.url + "worker/a")
    page.wait_for_selector("#worker")
    assert "01234567: 2 workers, 430.0 MiB of 600.0 MiB, 2 step-asides" in page.inner_text("#worker")
