"""Reused horses (`--jobs-per-process N`): one forked process runs job after job, and is replaced after N
jobs or when its RSS after a job passes the recycle line (a fraction of the real limit L).

The worker parent still does everything that decides about a job (dequeue, admission, BEGIN, the lease,
judging a death); it hands the begun attempt to the horse over a pipe and waits for "done" or for the
horse to die. A death of a reused horse is judged exactly as a fresh horse's: the pipe closes, the parent
reaps the process and its wait status is the evidence. Messages are msgpack, length-prefixed, never pickle.
"""

from __future__ import annotations

import os
import select
import signal
import struct
from dataclasses import asdict
from typing import Any, Callable

import msgpack

from ..model import Attempt, Checkpoint

_LENGTH = struct.Struct(">I")
Reaped = tuple[int, int, Any]  # os.wait4's answer: pid, wait status, rusage
DEATH_POLL = 0.5  # seconds between two looks for a horse that died with its pipe still held open
MAX_MESSAGE = 64 * 1024 * 1024  # a begun attempt carries its checkpoint (capped by max_checkpoint_bytes)


class HorseLine:
    """The two pipes between a worker parent and its reused horse, and how many jobs the horse has run."""

    def __init__(self) -> None:
        self._to_horse_r, self._to_horse_w = os.pipe()
        self._to_parent_r, self._to_parent_w = os.pipe()
        self.pid = 0
        self.jobs = 0  # jobs handed to this horse, the current one included

    # --- the parent ---------------------------------------------------------------------------
    def forked(self, pid: int) -> None:
        """In the parent, right after the fork: keep only its own ends, so a dead horse reads as EOF."""
        self.pid, self.jobs = pid, 1
        os.close(self._to_horse_r)
        os.close(self._to_parent_w)

    def hand(self, message: dict[str, Any]) -> None:
        self.jobs += 1
        _write(self._to_horse_w, message)

    def wait_done(self, keep: Callable[[dict[str, Any] | None, Reaped | None], None]) -> None:
        """Block until the horse reports its job done or dies, and hand `keep` what happened: (the message,
        None), (None, its wait4 result), or (None, None) when its end of the pipe closed (reap it then).
        Death is also looked for twice a second, in case a process the job forked holds the pipe open.
        RQ's monitor interrupts the wait with an alarm every interval: nothing is consumed until `keep` has
        it, the alarm being held back from the read to the end of `keep`."""
        while True:
            readable, _, _ = select.select([self._to_parent_r], [], [], DEATH_POLL)
            held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            try:
                if readable:
                    keep(_read(self._to_parent_r), None)
                    return
                reaped = os.wait4(self.pid, os.WNOHANG)
                if reaped[0]:
                    keep(None, reaped)
                    return
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def close(self) -> None:
        """The horse reads EOF and exits 0 (when it is still alive)."""
        for fd in (self._to_horse_w, self._to_parent_r):
            _close(fd)

    # --- the horse ----------------------------------------------------------------------------
    def in_horse(self) -> None:
        os.close(self._to_horse_w)
        os.close(self._to_parent_r)

    def report_done(self, job_id: str) -> None:
        _write(self._to_parent_w, {"done": job_id})

    def next_job(self) -> dict[str, Any] | None:
        """The next begun attempt to run; None when the parent closed the line (exit)."""
        return _read(self._to_horse_r)


def attempt_message(attempt: Attempt, job_id: str, job_record: dict[str, Any], queue: str, execution_id: str,
                    started_at: float) -> dict[str, Any]:
    """What a reused horse needs to run a begun attempt: `job_record`, RQ's record of the job as the parent
    holds it (RQ's Job.to_dict()), which a fresh horse would have inherited; each value as Redis returns it."""
    checkpoint = attempt.resumes_from
    record = {name: value if isinstance(value, (str, bytes)) else repr(value) for name, value in job_record.items()}
    return {"job": job_id, "record": record, "queue": queue, "execution": [execution_id, started_at],
            "attempt": [attempt.job_id, attempt.epoch, attempt.attempt, attempt.last_death,
                        asdict(checkpoint) if checkpoint is not None else None]}


def attempt_of(message: dict[str, Any]) -> Attempt:
    job_id, epoch, number, last_death, checkpoint = message["attempt"]
    return Attempt(job_id, epoch, number, last_death, Checkpoint(**checkpoint) if checkpoint else None)


def _write(fd: int, message: dict[str, Any]) -> None:
    body = msgpack.packb(message, use_bin_type=True)
    data = memoryview(_LENGTH.pack(len(body)) + body)
    while data:
        data = data[os.write(fd, data):]


def _read(fd: int) -> dict[str, Any] | None:
    head = _read_exactly(fd, _LENGTH.size)
    if head is None:
        return None
    (length,) = _LENGTH.unpack(head)
    if length > MAX_MESSAGE:
        raise ValueError(f"reused horse: a message of {length} bytes (more than {MAX_MESSAGE})")
    body = _read_exactly(fd, length)
    if body is None:
        return None
    message: dict[str, Any] = msgpack.unpackb(body, raw=False, max_bin_len=MAX_MESSAGE, max_str_len=MAX_MESSAGE)
    return message


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def reset_peak_rss() -> None:
    """Start this process's VmHWM afresh, so a reused horse's peak is the current job's (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
