"""What a horse's end means: wait status + evidence -> Death, and what follows from it."""

from __future__ import annotations

import os
import random
import signal
from typing import Any

from ..config import format_size
from ..errors import Preempted, StaleAttempt
from ..memory.probe import find_oom_line
from ..model import MEMORY_CAUSES, Cause, Death, DeathCount, Decision, JobOptions, crashed
from ..storage.connection import REDIS_AWAY

# Exit codes a horse uses to tell its parent why it stepped aside.
EXIT_PREEMPTED_MEMORY = 75
EXIT_PREEMPTED_SHUTDOWN = 76
EXIT_STALE = 77
EXIT_OOM_SELF = 78
EXIT_REDIS_LOST = 79

_EXIT_CAUSES = {
    EXIT_PREEMPTED_MEMORY: Cause.PREEMPTED_MEMORY,
    EXIT_PREEMPTED_SHUTDOWN: Cause.PREEMPTED_SHUTDOWN,
    EXIT_STALE: Cause.STALE,
    EXIT_OOM_SELF: Cause.OOM_SELF,
    EXIT_REDIS_LOST: Cause.PREEMPTED_REDIS,
}


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code a horse ends with for a control-flow exception (classify reads it back), or None
    for a real failure of the job."""
    if isinstance(exc, Preempted):
        return EXIT_PREEMPTED_MEMORY if exc.reason == "memory" else EXIT_PREEMPTED_SHUTDOWN
    if isinstance(exc, StaleAttempt):
        return EXIT_STALE
    if isinstance(exc, REDIS_AWAY):  # not the job's fault: it resumes from its last checkpoint
        return EXIT_REDIS_LOST
    return None


def classify(wait_status: int, oom_kills_before: int | None, oom_kills_after: int | None,
             killed_for: str | None = None) -> str:
    """The cause of a horse's end from its wait status and the cgroup's oom_kill counter; `killed_for` is
    why the worker itself sent SIGKILL, if it did ("shutdown": grace expired, "stall": no checkpoint)."""
    if os.WIFEXITED(wait_status):
        code = os.WEXITSTATUS(wait_status)
        return _EXIT_CAUSES.get(code, crashed(f"exit{code}"))
    if not os.WIFSIGNALED(wait_status):
        return crashed(f"status{wait_status}")
    sig = os.WTERMSIG(wait_status)
    if sig != signal.SIGKILL:
        return crashed(_signal_name(sig))
    if oom_kills_before is not None and oom_kills_after is not None and oom_kills_after > oom_kills_before:
        return Cause.OOM_KERNEL
    return {"shutdown": Cause.PREEMPTED_SHUTDOWN, "stall": Cause.STALLED}.get(killed_for or "", Cause.KILLED)


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"SIG{sig}"


def wait_evidence(wait_status: int, rusage: Any) -> dict[str, Any]:
    """The facts waitpid gives: status, exit code or signal, peak RSS (ru_maxrss is KiB on Linux)."""
    evidence: dict[str, Any] = {"wait_status": wait_status}
    if os.WIFEXITED(wait_status):
        evidence["exit_code"] = os.WEXITSTATUS(wait_status)
    elif os.WIFSIGNALED(wait_status):
        evidence["signal"] = _signal_name(os.WTERMSIG(wait_status))
    if rusage is not None:
        evidence["ru_maxrss"] = int(rusage.ru_maxrss) * 1024
    return evidence


def kernel_log_verdict(pid: int, before: int | None, after: int | None, log: str | None,
                       container: bool) -> str:
    """What the kernel log says about a horse killed with SIGKILL: its OOM line for `pid`, or, when there is
    none to quote, why not and what the cgroup's oom_kill counter shows instead. Inside a container the log
    is usually unreadable, and the kernel names the host's pid, not the one the worker knows."""
    line = find_oom_line(log, pid)
    if line:
        return line
    if log is None:
        why = "kernel log not readable" + (" from inside the container" if container else " (dmesg, /dev/kmsg)")
    else:
        why = f"no OOM line for pid {pid} in the kernel log" + (
            " (inside a container it names the host's pid)" if container else "")
    return f"{why}; {oom_counter_words(before, after)}"


def oom_counter_words(before: int | None, after: int | None) -> str:
    if before is None or after is None:
        return "the cgroup's oom_kill counter is unavailable"
    if after == before:
        return f"the cgroup's oom_kill counter stayed at {after}"
    return f"the cgroup's oom_kill counter rose {before}→{after}"


def backoff(deaths_in_a_row: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: base, 2 base, 4 base ... up to cap, each scaled by 0.5-1.0."""
    if base <= 0 or deaths_in_a_row < 1:
        return 0.0
    delay: float = min(cap, base * 2 ** (deaths_in_a_row - 1))
    return delay * (rng.uniform(0.5, 1.0) if rng else random.uniform(0.5, 1.0))


def decide(death: Death, count: DeathCount, options: JobOptions, queue: str, backoff_base: float = 0.0,
           backoff_max: float = 60.0) -> Decision:
    """Requeue from the checkpoint, route to the big-memory queue, or park with a diagnosis."""
    if death.is_memory and count.memory_stuck >= options.max_memory_deaths_at_same_checkpoint:
        if options.on_oom_queue and queue != options.on_oom_queue:
            return Decision("requeue", options.on_oom_queue, f"{death.cause} twice at checkpoint {count.seq}; "
                            f"routed to {options.on_oom_queue}", rerouted=True)
        return Decision("park", reason=memory_diagnosis(death, count))
    if death.counts_toward_cap and count.stuck >= options.max_deaths_without_progress:
        return Decision("park", reason=(
            f"died {count.stuck} times at checkpoint {count.seq} without progress "
            f"(last: {describe(death)}); fix the job, then `resilient requeue`"))
    if count.attempt >= options.max_attempts:
        return Decision("park", reason=f"gave up after {count.attempt} attempts (max_attempts); "
                                       f"last: {describe(death)}")
    # A preemption, or the first death since the checkpoint moved, resumes at once: the job was making
    # progress. Dying again at the same checkpoint waits a little, longer each time.
    delay = 0.0 if death.is_preemption else backoff(count.stuck - 1, backoff_base, backoff_max)
    return Decision("requeue", queue, death.cause, delay=delay)


def blame(cause: str, evidence: dict[str, Any], hard_bytes: int) -> dict[str, Any]:
    """Whose doing a memory death was, from the limit group's facts in `evidence`: `for_neighbours` when
    the job shared its limit and its horse alone stayed under the hard line (then it counts against
    nothing); for a kernel kill with neighbours, whether the killed horse was the biggest."""
    neighbours = evidence.get("neighbours") or []
    if cause not in MEMORY_CAUSES or not neighbours:
        return {}
    alone = max(int(evidence.get("ru_maxrss") or 0), int(evidence.get("own_rss") or 0))
    facts: dict[str, Any] = {"for_neighbours": alone < hard_bytes}
    if cause == Cause.OOM_KERNEL:
        facts["biggest"] = alone >= max(int(n.get("rss") or 0) for n in neighbours)
    return facts


def peak_rss(evidence: dict[str, Any]) -> int:
    """The highest figure we have: the governor's samples or the kernel's ru_maxrss of the horse."""
    return max(int(evidence.get(key) or 0) for key in ("rss", "peak_rss", "ru_maxrss"))


def memory_diagnosis(death: Death, count: DeathCount) -> str:
    ev = death.evidence
    peak = peak_rss(ev)
    whats: dict[str, str] = {Cause.PREEMPTED_MEMORY: "preempted for memory",
                             Cause.OOM_KERNEL: "OOM-killed by the kernel",
                             Cause.OOM_SELF: "stopped at the critical memory line"}
    what = whats[death.cause]
    return (f"{what} {count.memory_stuck} times at checkpoint {count.seq}, RSS under the limit reached "
            f"{format_size(peak)} of {format_size(ev.get('limit'))} limit ({ev.get('limit_source', 'unknown source')}): it cannot "
            "finish within this limit; give it more memory, smaller batches, or an on_oom_queue")


def describe(death: Death) -> str:
    """One plain sentence about a death, for people."""
    ev = death.evidence
    sentences: dict[str, str] = {
        Cause.PREEMPTED_MEMORY: "stepped aside at a checkpoint because memory reached the hard line",
        Cause.PREEMPTED_SHUTDOWN: "stepped aside because the worker was shutting down",
        Cause.PREEMPTED_REDIS: "stepped aside because Redis could not take its writes (unreachable, full or read-only)",
        Cause.OOM_KERNEL: "killed by the kernel OOM killer",
        Cause.OOM_SELF: "stopped by its governor at the critical memory line",
        Cause.KILLED: "killed with SIGKILL (no OOM evidence)",
        Cause.STALLED: "stopped by the worker: no checkpoint within the stall timeout (hung?)",
        Cause.LOST: "lost: its worker stopped renewing the lease (the whole worker or its container gone?)",
        Cause.STALE: "superseded by a newer attempt",
    }
    words = _for_neighbours(death) or sentences.get(death.cause, f"crashed ({death.cause})")
    facts = []
    under_limit = max(int(ev.get(key) or 0) for key in ("rss", "peak_rss"))  # everything the limit covers
    own = int(ev.get("ru_maxrss") or 0)  # the job's process alone (reused: over all the jobs it ran)
    if under_limit:
        facts.append(f"RSS under the limit {format_size(under_limit)}")
    if own and own != under_limit:
        facts.append(f"its process's peak RSS {format_size(own)}")
    if ev.get("limit"):
        facts.append(f"limit {format_size(ev['limit'])}")
    if "oom_kill_before" in ev:
        facts.append(f"oom_kill {ev['oom_kill_before']}→{ev['oom_kill_after']}")
    return words + (f" ({', '.join(facts)})" if facts else "")


def _for_neighbours(death: Death) -> str | None:
    """The sentence for a memory death the job's neighbours brought about (None for any other death)."""
    if not death.for_neighbours:
        return None
    ev = death.evidence
    group = (f"group {ev.get('group', '?')} at {format_size(ev.get('group_usage'))} of "
             f"{format_size(ev.get('group_limit'))}")
    others = len(ev.get("neighbours") or [])
    if death.cause == Cause.OOM_KERNEL:
        biggest = "the biggest" if ev.get("biggest") else "not the biggest"
        return (f"killed by the kernel OOM killer while {others} other job(s) shared its limit ({group}; this "
                f"job was {biggest}); not counted against it")
    how = "stepped aside" if death.cause == Cause.PREEMPTED_MEMORY else "stopped at the critical line"
    return (f"{how} for its neighbours: {group}, this job {format_size(ev.get('own_rss'))}, chosen because "
            f"{ev.get('chosen_because', 'it was the one to go')}; not counted against it")
