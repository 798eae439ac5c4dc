"""Readings: RSS, PSI and the kernel's OOM-kill line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from resilient.memory.probe import (
    PAGE_SIZE,
    Pressure,
    find_oom_line,
    parse_pressure,
    read_kernel_log,
    read_pressure,
    read_rss,
)

MiB = 1 << 20
PSI_SAMPLE = """some avg10=12.50 avg60=3.10 avg300=0.82 total=4567890
full avg10=4.25 avg60=1.00 avg300=0.20 total=1234567
"""
DMESG_SAMPLE = """\
[  101.000001] python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=500
[  101.000200] Memory cgroup out of memory: Killed process 12345 (python3) total-vm:612340kB
[  150.100000] Out of memory: Killed process 1234 (python3) total-vm:300000kB, anon-rss:280000kB, file-rss:0kB
[  170.000000] oom_reaper: reaped process 1234 (python3), now anon-rss:0kB, file-rss:0kB
[  201.500000] Memory cgroup out of memory: Killed process 1234 (python3) total-vm:310000kB, anon-rss:290000kB
"""


def test_rss_grows_with_real_allocation() -> None:
    """Memory a job touches shows up in its RSS reading at once."""
    before = read_rss()
    blob = bytearray(b"\x01") * (64 * MiB)
    after = read_rss()
    assert after - before >= 56 * MiB
    del blob


def test_rss_is_resident_pages_times_page_size(tmp_path: Path) -> None:
    """RSS comes from the second statm field, in pages."""
    statm = tmp_path / "statm"
    statm.write_text("90000 2500 300 10 0 8000 0\n")
    assert read_rss(str(statm)) == 2500 * PAGE_SIZE


def test_pressure_lines_are_parsed() -> None:
    """Stall percentages and the total stall time come out of a PSI file."""
    assert parse_pressure(PSI_SAMPLE) == Pressure(some_avg10=12.5, full_avg10=4.25, some_total_us=4567890)


def test_pressure_without_full_line_has_zero_full() -> None:
    """A PSI file with only a 'some' line (older CPU-style files) still gives a reading."""
    assert parse_pressure("some avg10=1.00 avg60=0.00 avg300=0.00 total=5\n") == Pressure(1.0, 0.0, 5)


@pytest.mark.parametrize("text", ["", "some avg10=abc avg60=0 avg300=0 total=1\n", "some avg60=1 total=2\n"])
def test_malformed_pressure_is_none(text: str) -> None:
    """Garbage in a PSI file gives no reading instead of an error in the governor."""
    assert parse_pressure(text) is None


def test_missing_pressure_file_is_none(tmp_path: Path) -> None:
    """A kernel without PSI gives no reading."""
    assert read_pressure(tmp_path / "memory.pressure") is None


@pytest.mark.skipif(not Path("/proc/pressure/memory").exists(), reason="kernel without PSI")
def test_real_system_pressure_is_read() -> None:
    """This host's /proc/pressure/memory is read as percentages and a stall total."""
    psi = read_pressure(Path("/proc/pressure/memory"))
    assert psi is not None
    assert 0.0 <= psi.full_avg10 <= psi.some_avg10 <= 100.0 and psi.some_total_us >= 0


def test_oom_line_is_the_latest_for_that_pid_without_timestamp() -> None:
    """The death evidence quotes the kernel's newest kill line for exactly that pid."""
    assert find_oom_line(DMESG_SAMPLE, 1234) == (
        "Memory cgroup out of memory: Killed process 1234 (python3) total-vm:310000kB, anon-rss:290000kB"
    )


@pytest.mark.parametrize("pid", [123, 12, 23456])
def test_oom_line_does_not_match_other_pids(pid: int) -> None:
    """A pid that is a prefix of a killed one (or absent) has no kill line."""
    assert find_oom_line(DMESG_SAMPLE, pid) is None


def test_oom_line_without_timestamps() -> None:
    """Lines read from /dev/kmsg (no timestamp prefix) match too."""
    log = "Out of memory: Killed process 77 (job) total-vm:1kB\n"
    assert find_oom_line(log, 77) == "Out of memory: Killed process 77 (job) total-vm:1kB"


def test_real_kernel_log_has_no_kill_of_this_process() -> None:
    """On this host a living process has no kill line (or the log is unreadable: None either way)."""
    assert find_oom_line(read_kernel_log(), os.getpid()) is None
