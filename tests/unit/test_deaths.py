"""Death verdicts from synthetic wait statuses and counter readings, and what follows from them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import redis

from resilient.errors import Preempted, StaleAttempt
from resilient.model import DeathCount, JobOptions
from resilient.runtime.deaths import (
    Death,
    classify,
    decide,
    describe,
    exit_code_for,
    kernel_log_verdict,
    memory_diagnosis,
    wait_evidence,
)

ROOT = Path(__file__).resolve().parents[2]


def exited(code: int) -> int:
    return code << 8


def signalled(sig: int) -> int:
    return int(sig)


@pytest.mark.parametrize("status, before, after, killed_for, cause", [
    (signalled(signal.SIGKILL), 3, 4, None, "oom:kernel"),
    (signalled(signal.SIGKILL), 3, 3, None, "killed"),
    (signalled(signal.SIGKILL), None, 4, None, "killed"),   # counter unavailable before: no OOM claim
    (signalled(signal.SIGKILL), 3, None, None, "killed"),   # unavailable after
    (signalled(signal.SIGKILL), 0, 0, "shutdown", "preempted:shutdown"),
    (signalled(signal.SIGKILL), 0, 1, "shutdown", "oom:kernel"),   # the kernel got there first
    (signalled(signal.SIGKILL), 0, 0, "stall", "stalled"),
    (signalled(signal.SIGSEGV), 0, 0, None, "crashed:SIGSEGV"),
    (signalled(signal.SIGTERM), 0, 0, None, "crashed:SIGTERM"),
    (exited(75), 0, 0, None, "preempted:memory"),
    (exited(76), 0, 0, None, "preempted:shutdown"),
    (exited(77), 0, 0, None, "stale"),
    (exited(78), 0, 0, None, "oom:self"),
    (exited(79), 0, 0, None, "preempted:redis"),
    (exited(1), 0, 0, None, "crashed:exit1"),
])
def test_classify(status, before, after, killed_for, cause):
    """Each way a horse can end gets its own name; OOM is claimed only on counter evidence."""
    assert classify(status, before, after, killed_for) == cause


def test_wait_evidence_has_signal_and_peak_rss_in_bytes():
    class Usage:
        ru_maxrss = 2048  # KiB, as Linux reports it

    evidence = wait_evidence(signalled(signal.SIGKILL), Usage())
    assert evidence == {"wait_status": 9, "signal": "SIGKILL", "ru_maxrss": 2 * 1024 * 1024}


def test_preemptions_do_not_count_but_memory_deaths_are_memory():
    assert not Death("preempted:memory").counts_toward_cap and Death("preempted:memory").is_memory
    assert Death("oom:kernel").counts_toward_cap and Death("oom:kernel").is_memory
    assert Death("killed").counts_toward_cap and not Death("killed").is_memory


def test_decide_requeues_parks_and_routes():
    """Progress → requeue; stuck → park with a diagnosis; on_oom_queue → routed instead of parked."""
    options = JobOptions(max_deaths_without_progress=3, max_attempts=10)
    oom = Death("oom:kernel", {"rss": 290 << 20, "limit": 300 << 20, "limit_source": "cgroup v1 x"})
    assert decide(Death("killed"), DeathCount(2, 0, 5, 3), options, "q").action == "requeue"
    parked = decide(Death("killed"), DeathCount(3, 0, 5, 3), options, "q")
    assert parked.action == "park" and "died 3 times at checkpoint 5" in parked.reason
    memory = decide(oom, DeathCount(2, 2, 7, 4), options, "q")
    assert memory.action == "park" and "290.0 MiB of 300.0 MiB" in memory.reason
    routed = decide(oom, DeathCount(2, 2, 7, 4), JobOptions(on_oom_queue="bigmem"), "q")
    assert (routed.action, routed.queue, routed.rerouted) == ("requeue", "bigmem", True)
    assert decide(Death("killed"), DeathCount(1, 0, 9, 10), options, "q").action == "park"  # max_attempts


def test_descriptions_are_plain_words():
    text = describe(Death("oom:kernel", {"rss": 1 << 20, "limit": 2 << 20, "oom_kill_before": 0,
                                         "oom_kill_after": 1}))
    assert text == "killed by the kernel OOM killer (RSS under the limit 1.0 MiB, limit 2.0 MiB, oom_kill 0→1)"
    shared = describe(Death("oom:kernel", {"rss": 3 << 20, "ru_maxrss": 1 << 20, "limit": 4 << 20}))
    assert "RSS under the limit 3.0 MiB, its process's peak RSS 1.0 MiB" in shared
    assert "unknown source" in memory_diagnosis(Death("oom:self", {}), DeathCount(2, 2, 0, 2))


@pytest.mark.parametrize("exc, code", [
    (Preempted("memory"), 75),
    (Preempted("shutdown"), 76),
    (StaleAttempt("superseded"), 77),
    (redis.ConnectionError("gone"), 79),
    (redis.exceptions.OutOfMemoryError("OOM command not allowed"), 79),
    (redis.exceptions.ReadOnlyError("READONLY"), 79),
    (ValueError("the job's own bug"), None),
])
def test_exit_code_for_each_way_a_horse_steps_aside(exc, code):
    """Control flow becomes an exit code that classify() reads back; a real failure has none."""
    assert exit_code_for(exc) == code
    if code is not None:
        assert classify(exited(code), 0, 0) != f"crashed:exit{code}"


@pytest.mark.parametrize("cause, stuck, delay_range", [
    ("killed", 1, (0.0, 0.0)),  # the first death since the checkpoint moved: resume at once
    ("killed", 2, (0.5, 1.0)),  # again at the same checkpoint: base (1 s) x 0.5-1.0
    ("killed", 3, (1.0, 2.0)),
    ("oom:kernel", 1, (0.0, 0.0)),
    ("preempted:memory", 5, (0.0, 0.0)),  # a step-aside never waits
])
def test_backoff_only_for_deaths_again_at_the_same_checkpoint(cause, stuck, delay_range):
    options = JobOptions(max_deaths_without_progress=10, max_memory_deaths_at_same_checkpoint=10)
    decision = decide(Death(cause), DeathCount(stuck, 0, 4, 1), options, "q", backoff_base=1.0)
    assert decision.action == "requeue"
    assert delay_range[0] <= decision.delay <= delay_range[1]


KILL_LINE = "Memory cgroup out of memory: Killed process 4321 (python3) total-vm:310000kB, anon-rss:290000kB"


@pytest.mark.parametrize("log, container, before, after, verdict", [
    (f"[  12.5] {KILL_LINE}\n", False, 0, 1, KILL_LINE),
    (None, True, 0, 1, "kernel log not readable from inside the container; the cgroup's oom_kill counter rose 0→1"),
    (None, False, 2, 3, "kernel log not readable (dmesg, /dev/kmsg); the cgroup's oom_kill counter rose 2→3"),
    ("[  1.0] unrelated\n", True, 0, 1,
     "no OOM line for pid 4321 in the kernel log (inside a container it names the host's pid); "
     "the cgroup's oom_kill counter rose 0→1"),
    ("[  1.0] unrelated\n", False, 1, 1, "no OOM line for pid 4321 in the kernel log; the cgroup's oom_kill "
                                         "counter stayed at 1"),
    (None, False, None, None, "kernel log not readable (dmesg, /dev/kmsg); the cgroup's oom_kill counter is "
                              "unavailable"),
])
def test_kernel_log_verdict_says_plainly_why_there_is_no_oom_line(log, container, before, after, verdict):
    """A kill with no kernel line to quote says why (unreadable log, a container's pid) and shows the counter."""
    assert kernel_log_verdict(4321, before, after, log, container) == verdict


def test_the_kernel_log_is_unreadable_without_the_right_to_read_it():
    """Where dmesg is restricted (as for a container's user), reading the log gives None, not an empty text."""
    if Path("/proc/sys/kernel/dmesg_restrict").read_text().strip() != "1" or os.geteuid() != 0:
        pytest.skip("needs root (to drop to nobody) and kernel.dmesg_restrict=1")
    system_python = shutil.which("python3", path="/usr/bin:/bin")  # the venv's may not be nobody's to run
    if system_python is None:
        pytest.skip("no /usr/bin/python3 to run as nobody")
    # probe.py needs only the standard library. Its source goes in on stdin: as nobody, neither the venv's
    # packages nor the file itself (in a checkout under a private directory, as mktemp -d makes) can be read.
    code = ("import sys, types; m = sys.modules['probe'] = types.ModuleType('probe'); "
            "exec(compile(sys.stdin.read(), 'probe.py', 'exec'), m.__dict__); print(m.read_kernel_log() is None)")
    run = subprocess.run([system_python, "-c", code], input=(ROOT / "resilient/memory/probe.py").read_text(),
                         capture_output=True, text=True, timeout=30, user=65534, group=65534, cwd="/")
    assert run.stdout.strip() == "True", run.stderr
