"""The governor: levels from usage and PSI, critical reported once, relief rate-limited, its thread."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import pytest

from resilient.memory.governor import Governor, Thresholds
from resilient.memory.limits import CONFIGURED, Limit
from resilient.memory.probe import Pressure, read_rss

MiB = 1 << 20
LIMIT = Limit(1000, CONFIGURED)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; True if it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def governor(usage: list[int], psi: list[Pressure | None] | None = None, **kwargs) -> Governor:
    """A governor over L=1000 bytes whose readers return the last value of `usage` / `psi`."""
    read_psi = (lambda: psi[-1]) if psi is not None else None
    return Governor(LIMIT, Thresholds(), lambda: usage[-1], read_psi, **kwargs)


def stalled(some_avg10: float) -> Pressure:
    return Pressure(some_avg10=some_avg10, full_avg10=0.0, some_total_us=1)


@pytest.mark.parametrize(
    "usage, level",
    [(0, "ok"), (699, "ok"), (700, "soft"), (849, "soft"), (850, "hard"), (949, "hard"), (950, "critical"),
     (1500, "critical")],
)
def test_level_follows_the_fraction_of_the_limit(usage: int, level: str) -> None:
    """70 % of L is soft, 85 % hard, 95 % critical."""
    g = governor([usage])
    assert g.sample() == level and g.level == level


def test_usage_peak_and_fraction_are_kept() -> None:
    """The last usage, the peak seen and the fraction of L are there for the death evidence."""
    usage = [300]
    g = governor(usage)
    g.sample()
    usage.append(800)
    g.sample()
    usage.append(500)
    g.sample()
    assert (g.usage, g.peak, g.fraction) == (500, 800, 0.5)


def test_memory_stalls_raise_ok_to_soft() -> None:
    """PSI stalls above the threshold count as pressure even while usage looks low."""
    g = governor([100], [stalled(25.0)])
    assert g.sample() == "soft"
    assert g.psi == stalled(25.0)


def test_light_stalls_leave_ok() -> None:
    """PSI below the threshold does not raise the level."""
    assert governor([100], [stalled(5.0)]).sample() == "ok"


def test_stalls_never_lower_a_higher_level() -> None:
    """PSI only raises: at the hard line it stays hard."""
    assert governor([900], [stalled(50.0)]).sample() == "hard"


def test_pressure_is_reread_at_most_twice_a_second() -> None:
    """PSI averages change every 2 s, so fast sampling does not reread the file each time."""
    clock = FakeClock()
    reads = []
    g = Governor(LIMIT, Thresholds(), lambda: 0, lambda: reads.append(1) or stalled(0.0), clock=clock)
    for _ in range(5):
        g.sample()
    clock.now += 0.5
    g.sample()
    assert len(reads) == 2


def test_critical_is_reported_once_with_the_usage() -> None:
    """At the critical line the horse is told once (it will kill itself), with the usage seen."""
    calls: list[int] = []
    usage = [960]
    g = governor(usage, on_critical=calls.append)
    g.sample()
    usage.append(990)
    g.sample()
    assert calls == [960]


def test_relief_runs_at_most_once_a_second() -> None:
    """gc.collect() + malloc_trim() are rate-limited so a job under pressure is not slowed to a crawl."""
    clock = FakeClock()
    g = governor([0], clock=clock)
    assert g.relieve() is True
    clock.now += 0.5
    assert g.relieve() is False
    clock.now += 0.6
    assert g.relieve() is True
    assert g.reliefs == 2


def test_sampling_speeds_up_under_pressure_or_fast_growth() -> None:
    """Every 100 ms while ok, every 10 ms from soft up or while usage climbs more than 5 % of L."""
    g = governor([0], interval=0.1, fast_interval=0.01)
    assert g.next_interval("ok", rise=50) == 0.1
    assert g.next_interval("ok", rise=51) == 0.01
    assert g.next_interval("soft", rise=0) == 0.01
    assert g.next_interval("hard", rise=-200) == 0.01


def test_thread_samples_until_stopped() -> None:
    """The daemon thread keeps the reading fresh and ends when stopped."""
    usage = [100]
    g = governor(usage, interval=0.005)
    g.start()
    try:
        assert wait_until(lambda: g.samples >= 3)
        usage.append(900)
        assert wait_until(lambda: g.level == "hard")
    finally:
        g.stop()
    assert not g.running
    count = g.samples
    assert not wait_until(lambda: g.samples > count, timeout=0.05)


def test_thread_relieves_on_entering_soft() -> None:
    """When pressure starts the thread frees what Python and malloc can give back."""
    usage = [100]
    g = governor(usage, interval=0.005)
    g.start()
    try:
        assert wait_until(lambda: g.samples >= 1)
        assert g.reliefs == 0
        usage.append(750)
        assert wait_until(lambda: g.reliefs == 1)
    finally:
        g.stop()


def test_thread_relieves_even_when_the_job_sampled_first() -> None:
    """A rise first seen by ctx.save() (the job's own sample) still gets the thread's relief."""
    g = governor([750], interval=0.005)
    assert g.sample() == "soft"
    g.start()
    try:
        assert wait_until(lambda: g.reliefs == 1)
    finally:
        g.stop()


def test_thread_survives_a_failing_reader(caplog: pytest.LogCaptureFixture) -> None:
    """A reading that fails is logged; the governor keeps watching instead of dying silently."""
    failures = [2]

    def flaky() -> int:
        if failures[0]:
            failures[0] -= 1
            raise OSError("memory.stat vanished")
        return 900

    g = Governor(LIMIT, Thresholds(), flaky, interval=0.005)
    with caplog.at_level(logging.ERROR, logger="resilient.memory.governor"):
        g.start()
        try:
            assert wait_until(lambda: g.level == "hard")
            assert g.running
        finally:
            g.stop()
    assert sum("failed; carrying on" in r.message for r in caplog.records) == 2


def test_thread_survives_a_failing_critical_callback(caplog: pytest.LogCaptureFixture) -> None:
    """An error in the critical callback is logged and sampling goes on."""

    def broken(usage: int) -> None:
        raise RuntimeError("kill failed")

    g = governor([990], on_critical=broken, interval=0.005)
    with caplog.at_level(logging.ERROR, logger="resilient.memory.governor"):
        g.start()
        try:
            assert wait_until(lambda: g.samples >= 3)
            assert g.running
        finally:
            g.stop()
    assert sum("failed; carrying on" in r.message for r in caplog.records) == 1


def test_real_allocation_past_a_small_limit_is_caught() -> None:
    """A job that allocates past a configured limit is seen at critical and reported with its usage."""
    baseline = read_rss()
    limit = Limit(2 * baseline, CONFIGURED)  # the process starts at 50 %: ok
    seen: list[int] = []
    reported = threading.Event()
    g = Governor(limit, Thresholds(), read_rss, on_critical=lambda u: (seen.append(u), reported.set()))
    g.start()
    try:
        assert wait_until(lambda: g.samples >= 1)
        assert g.level == "ok"
        blob = bytearray(b"\x01") * int(1.1 * limit.bytes - baseline)
        assert reported.wait(5.0)
        assert g.level == "critical" and seen[0] >= 0.95 * limit.bytes and g.peak >= seen[0]
        del blob
    finally:
        g.stop()


def test_real_allocation_into_the_soft_band_relieves_once() -> None:
    """Real growth to ~78 % of L makes the level soft and triggers one relief, not a kill."""
    grow = 40 * MiB
    governor([0]).relieve()  # hand back what earlier tests freed, so the relief below cannot drop us to ok
    limit = Limit(int((read_rss() + grow) / 0.78), CONFIGURED)
    critical: list[int] = []
    g = Governor(limit, Thresholds(), read_rss, on_critical=critical.append)
    g.start()
    try:
        assert wait_until(lambda: g.samples >= 1)
        assert g.level == "ok"
        blob = bytearray(b"\x01") * grow
        assert wait_until(lambda: g.level == "soft" and g.reliefs == 1)
        assert critical == []
        del blob
    finally:
        g.stop()
