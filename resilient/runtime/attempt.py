"""One attempt of one job, from its begin to its settling: the horse runs it, the worker parent watches it
and judges its end, and the decision is carried out here, the same way for a worker that judged its
horse's exit and a reaper that found a lease expired (settle)."""

from __future__ import annotations

import logging
import os
import resource
import signal
import traceback
from typing import Any

from ..api.context import Context
from ..api.registry import JobSpec
from ..config import Settings
from ..errors import CorruptCheckpoint, StaleAttempt
from ..memory.probe import read_peak_rss
from ..model import FINAL_STATUSES, Attempt, Cause, Death, Decision
from ..ops import metrics
from ..storage.codec import encode_state
from ..storage.connection import REDIS_AWAY
from ..storage.store import Store, now_ms
from . import deaths
from .memory_history import MemoryHistory
from .memory_watch import MemoryWatcher

log = logging.getLogger("resilient.attempt")
Outcome = tuple[Death, Decision | None]  # the death, and what follows (None: a newer attempt owns the job)


class AttemptRun:
    """A begun attempt in a worker. The horse (a fork, so its own copy) runs the job; the parent renews the
    lease, watches for a stall and judges the end. `killed_for` says why the parent SIGKILLed the horse."""

    def __init__(self, attempt: Attempt, spec: JobSpec, store: Store, memory: MemoryWatcher,
                 settings: Settings, worker: str, host: str) -> None:
        self.attempt, self.spec, self.store, self.memory = attempt, spec, store, memory
        self.settings, self.worker, self.host = settings, worker, host
        self.killed_for: str | None = None
        self.stalled_for = 0.0  # seconds without a checkpoint when the stall watchdog stopped the horse
        self.superseded = False
        self.outcome: Outcome | None = None
        self.ctx: Context | None = None
        self.stop_pending: str | None = None
        self.group_facts: dict[str, Any] = {}  # the limit group as it was when the horse ended
        self.jobs_in_process = 1  # a reused horse: the jobs its process has run, this one included
        self.horse_noted = False

    @classmethod
    def begin(cls, job_id: str, spec: JobSpec, store: Store, memory: MemoryWatcher, settings: Settings,
              worker: str, host: str) -> tuple[str, AttemptRun | Attempt | str]:
        """Take the lease and the next epoch: ('OK', AttemptRun), or BEGIN's other verdicts as they are."""
        memory.before_attempt()  # the limit as it is now, and the oom_kill counter before the attempt
        verdict, attempt = store.begin_attempt(job_id, worker, host, **memory.facts(*thresholds_of(spec)))
        if verdict != "OK" or not isinstance(attempt, Attempt):
            return verdict, attempt
        return verdict, cls(attempt, spec, store, memory, settings, worker, host)

    # --- in the horse -------------------------------------------------------------------------
    def run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call the job with a Context resumed from its checkpoint; store the result (fenced)."""
        attempt = self.attempt
        self.ctx = Context(attempt, self.store, self.spec.options, attempt.resumes_from,
                           self.settings.max_checkpoint_bytes,
                           governor=self.memory.governor, on_persist=self.memory.checkpointed)
        if self.stop_pending:
            self.ctx.request_stop(self.stop_pending)
        if self.memory.governor is not None:
            MemoryHistory(self.store, attempt, self.memory.governor).start()
        result = self.spec.fn(self.ctx, *args, **kwargs)
        self.store.complete(attempt, encode_state(result, self.settings.max_checkpoint_bytes, "result"),
                            peak_rss=_peak_rss_of_this_job(), **self.ctx.final_progress())
        return result

    def request_stop(self, reason: str) -> None:
        """The horse was told to step aside (SIGTERM/SIGUSR1): at its next safe point, or at once if the job
        has not started yet."""
        self.stop_pending = reason
        if self.ctx is not None:
            self.ctx.request_stop(reason)

    def record_failure(self, exc: BaseException) -> None:
        """The job raised: it fails with its error (or parks, when its checkpoint cannot be read). Raises
        StaleAttempt when a newer attempt owns the job."""
        if isinstance(exc, CorruptCheckpoint):
            self.store.park(self.attempt, f"its checkpoint cannot be read ({exc}); inspect it, then "
                                          "`resilient requeue --restart` to start over")
        else:
            self.store.fail(self.attempt, "".join(traceback.format_exception_only(type(exc), exc)).strip())

    # --- in the parent, while the horse runs ----------------------------------------------------
    def note_horse(self, pipeline: Any) -> None:
        """In the horse: its pid (for status and people), queued on the first pipeline RQ sends for the job
        (its own bookkeeping before the job runs), so that it costs no round trip of its own."""
        if not self.horse_noted:
            self.horse_noted = True
            self.store.set_fields(self.attempt, pipeline=pipeline, horse_pid=os.getpid())

    def renew(self) -> float:
        """Renew the lease; the seconds since the attempt's last checkpoint (StaleAttempt if superseded)."""
        checkpointed_at = self.store.renew_lease(self.attempt)
        age = (now_ms() - checkpointed_at) / 1000
        metrics.checkpoint_age(age)
        return age

    def ended_itself(self) -> bool:
        """The job is in a final status under this attempt's epoch: its horse wrote the end (and may be waiting
        for a replica to have it), so a refused renewal does not mean a newer attempt took over."""
        try:
            fields = self.store.job_fields(self.attempt.job_id)
        except REDIS_AWAY:
            return True  # not known now: the next renewal asks again
        return fields.get("epoch") == str(self.attempt.epoch) and fields.get("status") in FINAL_STATUSES

    def stalled(self, checkpoint_age: float) -> bool:
        """A horse with no checkpoint for --stall-timeout seconds is taken for hung (a C call that never
        returns, SIGSTOP): its worker renews its lease, so nobody else would ever notice."""
        timeout = self.settings.stall_timeout
        if not timeout or checkpoint_age <= timeout or self.killed_for is not None:
            return False
        log.warning("job %s: no checkpoint for %.0f s (stall timeout %.0f s); stopping it", self.attempt.job_id,
                    checkpoint_age, timeout)
        self.killed_for, self.stalled_for = "stall", round(checkpoint_age, 1)
        return True

    # --- in the parent, after the horse -----------------------------------------------------------
    def judge(self, pid: int, wait_status: int, rusage: Any, queue: str, backoff_base: float) -> Outcome:
        """Name the death with its evidence, record and count it, and decide what follows (`queue`: where
        the job came from, where a requeue sends it back)."""
        attempt = self.attempt
        before, after = self.memory.oom_counts()
        cause = deaths.classify(wait_status, before, after, self.killed_for)
        evidence = deaths.wait_evidence(wait_status, rusage)
        fields = self.store.job_fields(attempt.job_id)
        killed = os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) == signal.SIGKILL
        evidence.update(self.memory.evidence(before, after, fields, job_pid=pid, killed=killed))
        evidence.update(done=int(fields.get("done", 0)), checkpoint_done=int(fields.get("ckpt_done", 0)))
        evidence.update(cause=cause, attempt=attempt.attempt, worker=self.worker, host=self.host, pid=pid)
        if self.jobs_in_process > 1:  # module state and memory left by earlier jobs were there too
            evidence["earlier_jobs_in_process"] = self.jobs_in_process - 1
        if cause == Cause.STALLED:
            evidence.update(checkpoint_age=self.stalled_for, stall_timeout=self.settings.stall_timeout)
        evidence.update(self.group_facts)
        hard = self.memory.thresholds(*thresholds_of(self.spec)).hard
        evidence.update(deaths.blame(cause, evidence, int(hard * self.memory.limit.bytes)))
        death = Death(cause, evidence)
        log.warning("job %s attempt %d: %s", attempt.job_id, attempt.attempt, deaths.describe(death))
        metrics.death(cause, evidence["done"] - evidence["checkpoint_done"], death.for_neighbours)
        if cause == Cause.STALE:
            return death, None
        try:
            count = self.store.record_death(attempt, death)
        except StaleAttempt:
            return death, None
        return death, deaths.decide(death, count, self.spec.options, queue, backoff_base,
                                    self.settings.retry_backoff_max)


def _peak_rss_of_this_job() -> int:
    """VmHWM: a reused horse starts it afresh for each job (reuse.reset_peak_rss); ru_maxrss cannot be."""
    return read_peak_rss(os.getpid()) or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def thresholds_of(spec: JobSpec) -> tuple[float | None, float | None, float | None]:
    """The job's own memory lines, where it declared them (None: the worker's)."""
    return spec.options.soft, spec.options.hard, spec.options.critical


def settle(store: Store, attempt: Attempt, death: Death, decision: Decision) -> bool:
    """Park the job or requeue it (at the front of its queue, now or after the decision's delay), in one
    fenced step under the attempt's epoch; False when a newer attempt owns the job."""
    try:
        if decision.action == "park":
            store.park(attempt, decision.reason)
            log.warning("job %s parked: %s", attempt.job_id, decision.reason)
        else:
            store.mark_requeued(attempt, death.cause, decision.queue, decision.rerouted, decision.delay)
            log.info("job %s requeued on %s in %.1f s (%s)", attempt.job_id, decision.queue, decision.delay,
                     decision.reason)
    except StaleAttempt:
        return False
    return True
