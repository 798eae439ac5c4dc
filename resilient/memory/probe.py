"""Readings: this process's RSS, PSI pressure, and the kernel's word on an OOM kill."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_DMESG_TIMEOUT = 2.0
_KMSG_BUDGET = 1.0  # seconds spent reading /dev/kmsg at most
_TIMESTAMP = re.compile(r"^\[\s*[\d.]+\]\s*")
_CONTAINER_MARKS = ("/run/.containerenv", "/.dockerenv")


def read_rss(statm: str = "/proc/self/statm") -> int:
    """Resident set size in bytes.

    One os.open/os.read/os.close of statm: 2.0 µs median on this machine (2 cores, kernel 6.18;
    a buffered `with open()` takes 6.4 µs), so even sampling every 10 ms costs ~0.02 % of a core.
    """
    fd = os.open(statm, os.O_RDONLY)
    try:
        data = os.read(fd, 256)
    finally:
        os.close(fd)
    return int(data.split()[1]) * PAGE_SIZE


def read_rss_of(pid: int) -> int:
    """Process `pid`'s RSS in bytes; 0 when it is gone or unreadable (it may end between two reads)."""
    try:
        return read_rss(f"/proc/{pid}/statm")
    except (OSError, ValueError, IndexError):
        return 0


def read_peak_rss(pid: int) -> int:
    """The highest RSS process `pid` has had (VmHWM), in bytes; 0 when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass(frozen=True)
class Pressure:
    """The PSI figures the governor uses: % of the last 10 s some/all tasks stalled on memory."""

    some_avg10: float
    full_avg10: float
    some_total_us: int


def read_pressure(path: Path) -> Pressure | None:
    """PSI from a pressure file; None when it is absent or PSI is off (the kernel then refuses the read)."""
    try:
        with open(path) as f:
            return parse_pressure(f.read())
    except OSError:
        return None


def parse_pressure(text: str) -> Pressure | None:
    """Parse `some avg10=… avg60=… avg300=… total=…` / `full …` lines; None when malformed."""
    lines: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        lines[kind] = dict(item.partition("=")[::2] for item in rest.split())
    some, full = lines.get("some"), lines.get("full", {})
    if some is None:
        return None
    try:
        return Pressure(float(some["avg10"]), float(full.get("avg10", 0.0)), int(some["total"]))
    except (KeyError, ValueError):
        return None


def read_kernel_log() -> str | None:
    """The kernel log's text, from dmesg or /dev/kmsg; None when neither can be read (without CAP_SYSLOG
    under kernel.dmesg_restrict, as in a container)."""
    return _dmesg() or _kmsg()


def in_container() -> bool:
    """Whether this process runs in a container: podman's or Docker's mark file, or a Kubernetes pod's
    cgroup (cgroup v1)."""
    if any(os.path.exists(mark) for mark in _CONTAINER_MARKS):
        return True
    try:
        return "kubepods" in Path("/proc/self/cgroup").read_text()
    except OSError:
        return False


def find_oom_line(log: str | None, pid: int) -> str | None:
    """The last OOM-kill line naming `pid` in a kernel log text (read_kernel_log), without its timestamp;
    None when there is none, or no log."""
    needle = re.compile(rf"Killed process {int(pid)} \(")
    found = None
    for line in (log or "").splitlines():
        if needle.search(line):
            found = _TIMESTAMP.sub("", line).strip()
    return found


def _dmesg() -> str | None:
    try:
        done = subprocess.run(
            ["dmesg"], capture_output=True, text=True, errors="replace", timeout=_DMESG_TIMEOUT
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _kmsg() -> str | None:
    """Every record in the kernel ring buffer, read without blocking (one record per read)."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    messages = []
    deadline = time.monotonic() + _KMSG_BUDGET
    try:
        while time.monotonic() < deadline:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break  # caught up with the newest record
            except BrokenPipeError:
                continue  # the record we were at was overwritten; the next read resumes
            if not record:
                break
            # "prio,seq,usec,flags;message\n continuation lines"
            messages.append(record.decode(errors="replace").partition(";")[2].split("\n", 1)[0])
    except OSError:
        return None
    finally:
        os.close(fd)
    return "\n".join(messages)
