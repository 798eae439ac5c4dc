"""ResilientWorker: RQ's forking worker, with attempts, fenced checkpoints and death verdicts."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, TypeVar, cast

import redis
from redis.typing import EncodableT, FieldT
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.utils import now
from rq.worker import Worker, WorkerStatus

from ..api.registry import JobSpec
from ..config import Settings, format_size
from ..errors import BadQueueEntry, StaleAttempt, UnknownJob
from ..memory.probe import read_rss_of
from ..model import Attempt, Death, Decision, Level
from ..ops import health, logs, metrics
from ..storage import keys
from ..storage.codec import MsgpackSerializer
from ..storage.connection import REDIS_AWAY, impatient_client, keep_trying, reason_for
from ..storage.durability import WriteLost
from ..storage.spare import SpareConnection
from ..storage.store import Store
from . import deaths
from .attempt import AttemptRun, Outcome, settle, thresholds_of
from .limit_group import Need, expected_peak
from .memory_watch import MemoryWatcher
from .procs import die_with_parent, end_leftovers, load_prctl
from .reuse import HorseLine, Reaped, attempt_message, attempt_of, reset_peak_rss
from .rqjob import ResilientJob, rq_keys

log = logging.getLogger("resilient.worker")
OUR_BEAT_INTERVAL = 1.0  # seconds between two of our heartbeat extras
# RQ beats (and marks the worker idle) 3-4 times between two jobs, each time with a round trip of its own,
# within a millisecond or two; one beat in this long keeps the worker's record just as alive (its TTL is
# minutes).
RQ_BEAT_REPEAT = 0.5
PRESSURE_POLL = 0.2  # seconds between two looks at memory while not taking jobs
HEADROOM_PATIENCE = 5.0  # seconds a worker waits for its group to change before it looks at its queues again
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # what the horse takes as "checkpoint and step aside"
FAREWELL_TIMEOUT = 0.5  # seconds a stopping worker gives Redis to take its farewell writes
T = TypeVar("T")


class ResilientWorker(Worker):
    """Forks one horse per attempt; decides what every horse death means and resumes the job."""

    def __init__(self, queues: list[str], connection: redis.Redis, settings: Settings,
                 memory: MemoryWatcher | None = None, burst: bool = False, **kwargs: Any) -> None:
        super().__init__(queues, connection=connection, serializer=MsgpackSerializer,
                         job_class=ResilientJob, queue_class=Queue, **kwargs)
        self.settings = settings
        self.store = Store(connection, settings)
        self._spare = SpareConnection(connection)  # the next horse's connection, opened while one runs
        self.store.durable.tick = lambda: health.mark_alive("worker", self.name)  # while a replica is awaited
        self.memory = memory or MemoryWatcher(settings)
        self.job_monitoring_interval = max(1, int(settings.monitor_interval))
        self.host = socket.gethostname()
        self._run: AttemptRun | None = None  # the attempt being run, from its begin to its settling
        self._execution: Execution | None = None
        self._current: tuple[ResilientJob, Queue] | None = None
        self._grace_timer: threading.Timer | None = None
        self.pressure_waits = 0
        self._last_wait_status: int | None = None
        self._burst = burst  # a burst worker retries at once: it must not exit leaving delayed jobs behind
        self._our_beat_at = float("-inf")
        self._rq_beat_at = float("-inf")
        self._idle_unsent = False  # marked idle here, not yet in Redis: it goes with the next beat
        self._job_in_hand = False  # between taking a job off its queue and RQ counting this worker busy
        self._drained = False
        self._reaped: tuple[int, int, Any] | None = None  # the horse's wait4 result until it is handled
        self._waiting_for: tuple[str, Need] | None = None  # a job handed back for lack of headroom
        self.headroom_waits = 0
        self._line: HorseLine | None = None  # the reused horse, with --jobs-per-process > 1
        self._horse_lives_on = False  # the last wait ended with the reused horse's "done", not its exit
        load_prctl()  # each horse calls prctl (die_with_parent): loaded once here, not ~0.2 ms in every horse

    @property
    def stopping(self) -> bool:
        """A warm stop was requested. (RQ private, pinned in test_rq_pins: RQ has no public flag for it.)"""
        return self._stop_requested

    @property
    def ended_cleanly(self) -> bool:
        """The work loop ended because it was asked to (a signal) or ran out of work (burst). RQ ends it just
        as quietly after an unhandled exception, which must not look like a clean stop to a supervisor."""
        # RQ private (pinned in test_rq_pins): work() returns no reason for ending; this is where it is noted
        return self._drained or self._shutdown_requested_date is not None

    # --- parent: one attempt --------------------------------------------------------------------
    def execute_job(self, job: ResilientJob, queue: Queue) -> None:  # type: ignore[override]
        try:
            self._execute(job, queue)
        finally:
            self._job_in_hand = False

    def _execute(self, job: ResilientJob, queue: Queue) -> None:
        if self.stopping:  # SIGTERM came after the dequeue: the job goes back untouched
            self._hand_back(job, queue)
            log.info("job %s handed back to %s: stopping", job.id, queue.name)
            return
        spec = self._allowed_spec(job, queue)
        if spec is None or self._turned_away(job, queue, spec) or not self._admitted(job, queue, spec):
            return
        try:
            verdict, run = self._begin(job, spec)
        except WriteLost as exc:  # the new primary never saw this start: the job is as it was before it
            self.memory.release_seat()
            log.warning("job %s not started: %s; back to its queue unless it is there already", job.id, exc)
            self._despite_redis_away(f"requeue job {job.id}",
                                     lambda: self.store.rescue_stranded(job.id, queue.name, taken=True))
            return
        except BaseException:
            self.memory.release_seat()
            raise
        if not isinstance(run, AttemptRun):
            self.memory.release_seat()
            self._not_startable(job, queue, verdict, run)
            return
        self._run, self._current = run, (job, queue)
        logs.bind(job_id=job.id, attempt=run.attempt.attempt, epoch=run.attempt.epoch, queue=queue.name)
        try:
            super().execute_job(job, queue)
            if run.superseded or self._last_wait_status == deaths.EXIT_STALE << 8:
                # RQ skips its own clean-up when the job already finished elsewhere: drop our ghost entry
                self._forget_execution(job, self._execution)
        finally:
            self.memory.release_seat()  # (given back already when the horse was waited for)
            self._cancel_grace_timer()
            metrics.checkpoint_age(0.0)  # no job, no age: a stale figure would look like a hung job
            logs.unbind("job_id", "attempt", "epoch", "queue")
            self._run = self._current = self._execution = None
            self._recycle_if_due()

    def _recycle_if_due(self) -> None:
        """A reused horse is replaced after --jobs-per-process jobs, or when its RSS after a job is above the
        recycle line (a fraction of L): memory a job left behind (caches, fragmentation) goes with it."""
        line = self._line
        if line is None:
            return
        rss, recycle_line = read_rss_of(line.pid), int(self.settings.recycle_at * self.memory.limit.bytes)
        if line.jobs < self.settings.jobs_per_process and rss <= recycle_line:
            return
        why = (f"after {line.jobs} jobs" if line.jobs >= self.settings.jobs_per_process else
               f"its RSS {format_size(rss)} is above the recycle line {format_size(recycle_line)}")
        log.info("replacing the job process %d: %s", line.pid, why)
        self.retire_horse()

    def retire_horse(self) -> None:
        """End the reused horse, if there is one: it reads the closed line and exits 0."""
        line, self._line = self._line, None
        if line is None:
            return
        line.close()
        with contextlib.suppress(ChildProcessError):
            os.wait4(line.pid, 0)
        self._after_exit(line.pid)

    def wait_for_horse(self) -> Any:
        """Reap the horse (or, reused, hear its "done"), then give its seat back and end what it left. RQ
        times this wait with SIGALRM and raises from the handler: an alarm landing just after the reap would
        lose the exit status (the next wait finds no child), so the status is kept on the worker until this
        call has done everything, and the alarm is cancelled before anything else runs."""
        if self._reaped is None and self._line is not None and self._line.pid == self.horse_pid:
            self._line.wait_done(self._keep_line_news)
        if self._reaped is None:
            with contextlib.suppress(ChildProcessError):  # (RQ's own wait does the same)
                self._reaped = os.wait4(self.horse_pid, 0)
        signal.alarm(0)  # RQ's death penalty cancels it anyway once this returns
        pid, status, rusage = self._reaped or (None, None, None)
        self._last_wait_status = status
        if pid and self._run is not None:
            self._run.group_facts = self.memory.release_seat()
        if pid and not self._horse_lives_on:
            self._after_exit(pid)
        self._reaped, self._horse_lives_on = None, False
        return pid, status, rusage

    def _keep_line_news(self, done: dict[str, Any] | None, reaped: Reaped | None) -> None:
        """What the reused horse's line said: its job is done (it lives on), or it died (reaped, or its pipe
        closed: reaped next)."""
        if done is not None:
            self._reaped, self._horse_lives_on = (self.horse_pid, 0, None), True
            return
        self._reaped = reaped
        if self._line is not None:
            self._line.close()
            self._line = None

    def _after_exit(self, pid: int) -> None:
        """A horse process has exited and been reaped: end what it left running, fold in its metrics."""
        end_leftovers(pid, keep=self._own_children())
        metrics.process_exited(pid)

    def _own_children(self) -> set[int]:
        """Children of the parent that are not the job's: RQ's scheduler process, when it runs one."""
        # RQ private (getattr: absent is fine): the scheduler's forked process has no public handle
        process = getattr(self.scheduler, "_process", None) if self.scheduler else None
        return {process.pid} if process is not None and process.pid else set()

    def prepare_execution(self, job: ResilientJob) -> Execution:  # type: ignore[override]
        self._execution = super().prepare_execution(job)
        self._job_in_hand = False  # RQ counts the worker busy from here: a SIGTERM only notes the request
        return self._execution

    def request_stop(self, signum: int, frame: Any) -> None:
        """SIGTERM/SIGINT. RQ takes a worker that is not busy yet for idle and raises StopRequested wherever
        the signal lands, which would strand a job just taken off its queue (or leave it running with a
        lease). With a job in hand, note the request instead: the job is handed back, or its horse asked
        to step aside as soon as it exists."""
        if not self._job_in_hand:
            super().request_stop(signum, frame)  # type: ignore[no-untyped-call]  # untyped in RQ
            return
        log.info("warm shut down requested while starting a job")
        # RQ privates (pinned in test_rq_pins): what RQ's own request_stop sets, without its raise
        self._shutdown_requested_date = now()
        self._stop_requested = True
        signal.signal(signal.SIGINT, self.request_force_stop)
        signal.signal(signal.SIGTERM, self.request_force_stop)

    def _allowed_spec(self, job: ResilientJob, queue: Queue) -> JobSpec | None:
        """The registered spec, or refuse the entry (unknown function, pickle or garbage payload)."""
        try:
            return job.spec()
        except (BadQueueEntry, UnknownJob) as exc:
            self._refuse(job.id, queue, f"{exc}; nothing executed")
        return None

    def _turned_away(self, job: ResilientJob, queue: Queue, spec: JobSpec) -> bool:
        """A job declared bigger than this worker's hard line cannot finish here: it goes to its
        on_oom_queue (unless that is where it is) or is parked, before any attempt."""
        needs = spec.options.memory
        limit = self.memory.refresh_limit().bytes
        hard = self.memory.thresholds(*thresholds_of(spec)).hard
        if not needs or needs <= hard * limit:
            return False
        where = spec.options.on_oom_queue if spec.options.on_oom_queue != queue.name else None
        reason = (f"needs ~{format_size(needs)} (declared), more than the hard line {format_size(int(hard * limit))} "
                  f"of this worker's {format_size(limit)} limit ({self.memory.limit.source})")
        reason += f"; routed to {where}" if where else "; give it a bigger limit or an on_oom_queue"
        if self.store.turn_away(job.id, queue.name, reason, where):
            log.warning("job %s not started: %s", job.id, reason)
            if where is None:
                self._fail_in_rq(job, queue, f"parked: {reason}")
        return True

    def _admitted(self, job: ResilientJob, queue: Queue, spec: JobSpec) -> bool:
        """Under a limit shared with other workers, a job starts only when its expected peak fits the
        group's headroom; otherwise it goes back to the front of its queue (where a worker under another
        limit may take it) and this worker waits for the group to change before it takes another."""
        need = Need(spec.options.memory) if spec.options.memory else None
        admitted = self.memory.admit(job.id, need)
        if admitted is None:  # neighbours present: the job's expected peak decides
            need = expected_peak(None, *self.store.peaks(job.id, spec.name))
            admitted = self.memory.admit(job.id, need)
        if admitted:
            self._waiting_for = None
            return True
        need = need or Need(None)
        self._hand_back(job, queue)
        self._waiting_for = (job.id, need)
        self.headroom_waits += 1
        log.info("job %s waits for headroom: expected peak %s; group at %s of %s", job.id,
                 format_size(need.expected) if need.expected else "unknown (below the soft line only)",
                 format_size(self.memory.usage()), format_size(self.memory.limit.bytes))
        return False

    def _wait_for_headroom(self) -> None:
        """After handing a job back for lack of headroom: wait, reading only local state, until it would
        fit or a member of the group has left (then the queue may hold something else), at most
        HEADROOM_PATIENCE seconds."""
        if self._waiting_for is None:
            return
        _, need = self._waiting_for
        _, members = self.memory.headroom(need)
        deadline = time.monotonic() + HEADROOM_PATIENCE
        self._our_beat_at = float("-inf")  # publish the wait at once
        while not self.stopping and time.monotonic() < deadline:
            self.heartbeat()
            time.sleep(PRESSURE_POLL)
            fits_now, members_now = self.memory.headroom(need)
            if fits_now or members_now != members:
                break
        self._waiting_for = None  # waiting no more: the job may be taken by anyone, this worker included

    def _not_startable(self, job: ResilientJob, queue: Queue, verdict: str, attempt: Attempt | str) -> None:
        if verdict == "EXHAUSTED" and isinstance(attempt, Attempt):
            reason = f"gave up after {attempt.attempt - 1} attempts (max_attempts)"
            try:
                self.store.park(attempt, reason)
            except StaleAttempt:  # another worker began it meanwhile: its entry, not ours
                return
            self._fail_in_rq(job, queue, f"parked: {reason}")
        elif verdict == "MISSING":
            self._refuse(job.id, queue, "not enqueued through resilient (no job record)")
        else:
            log.info("job %s is already %s; dropping a stale queue entry", job.id, attempt)
            self.connection.lrem(queue.intermediate_queue_key, 1, job.id)

    def _refuse(self, job_id: str, queue: Queue, reason: str) -> None:
        """Nothing runs; the entry leaves RQ's lists for good, and a job waiting to run fails with the reason."""
        log.error("job %s refused: %s", job_id, reason)
        self.store.refuse(job_id, f"refused: {reason}", rq_keys(job_id, queue), self.settings.result_ttl)

    def _fail_in_rq(self, job: ResilientJob, queue: Queue, reason: str) -> None:
        with self.connection.pipeline() as pipe:
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            queue.failed_job_registry.add(job, ttl=self.settings.result_ttl, exc_string=reason, pipeline=pipe)
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)  # still there when the horse never started
            pipe.execute()

    # --- horse ----------------------------------------------------------------------------------
    def fork_work_horse(self, job: ResilientJob, queue: Queue) -> None:  # type: ignore[override]
        if self._line is not None:
            self._hand_to_reused_horse(job, queue, self._line)
        else:
            self._fork(job, queue)
        if self.stopping:  # asked to stop before the horse existed: tell it now
            self._ask_horse_to_step_aside()

    def _fork(self, job: ResilientJob, queue: Queue) -> None:
        self._line = HorseLine() if self.settings.jobs_per_process > 1 else None
        # Stop requests must not reach the horse before it has a handler for them.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            super().fork_work_horse(job, queue)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if self._line is not None:
            self._line.forked(self.horse_pid)
        self._spare.handed_over()
        self._spare.prepare()  # for the next horse, while this one runs

    def _hand_to_reused_horse(self, job: ResilientJob, queue: Queue, line: HorseLine) -> None:
        assert self._run is not None and self._execution is not None
        execution = self._execution
        line.hand(attempt_message(self._run.attempt, job.id, job.to_dict(), queue.name, execution.id,
                                  execution.created_at.timestamp()))
        self._horse_pid = line.pid  # RQ private (pinned in test_rq_pins): the horse RQ monitors and kills
        self._run.jobs_in_process = line.jobs

    def main_work_horse(self, job: ResilientJob, queue: Queue) -> None:  # type: ignore[override]
        die_with_parent(cast(int, self.pid))  # None only for a worker not prepared for work; ours are
        self._spare.adopt()
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._horse_stop_requested)
        # keep our handlers: RQ's main_work_horse resets SIGTERM through this method (no option to skip it)
        self.setup_work_horse_signals = lambda: None  # type: ignore[method-assign]
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        run = self._run
        assert run is not None
        self.store.durable.tick = lambda: None  # the parent ticks for the worker, the horse must not
        self.memory.in_horse(on_critical=self._exit_at_critical,
                             thresholds=self.memory.thresholds(*thresholds_of(run.spec)))
        job.runner = run.run
        if self._line is None:
            super().main_work_horse(job, queue)
        else:
            self._serve_jobs(job, queue, self._line)

    def _serve_jobs(self, job: ResilientJob, queue: Queue, line: HorseLine) -> None:
        """A reused horse: run this job, then each one the parent hands over, until it closes the line. Any
        death (a control-flow exit, a signal) ends the process, judged by the parent as for a fresh horse."""
        line.in_horse()
        random.seed()
        self._is_horse = True  # RQ private (pinned): what RQ's main_work_horse sets
        execution = cast(Execution, self.execution)
        while True:
            reset_peak_rss()
            try:
                self.perform_job(job, queue, execution)
                self.memory.job_done()
                line.report_done(job.id)
                message = line.next_job()
                if message is None:
                    os._exit(0)
                job, queue, execution = self._take(message)
            except BaseException:  # as RQ's main_work_horse: whatever escapes ends the horse (the parent then
                log.exception("job process %d: stopping on an unexpected error", os.getpid())  # judges it)
                os._exit(1)

    def _take(self, message: dict[str, Any]) -> tuple[ResilientJob, Queue, Execution]:
        """In a reused horse: the job, queue, RQ execution and begun attempt the parent handed over."""
        job = cast(ResilientJob, self.job_class(message["job"], connection=self.connection,
                                                serializer=self.serializer))
        job.restore(message["record"])  # RQ's record as the parent read it (a fresh horse inherits it)
        queue = next(q for q in self.queues if q.name == message["queue"])
        execution_id, started_at = message["execution"]
        execution = Execution(execution_id, job.id, self.connection, worker_name=self.name)
        execution.created_at = execution.last_heartbeat = datetime.fromtimestamp(started_at, timezone.utc)
        self.executions = {execution.id: execution}
        spec = job.spec()
        self._run = run = AttemptRun(attempt_of(message), spec, self.store, self.memory, self.settings,
                                     self.name, self.host)
        self.memory.next_job(self.memory.thresholds(*thresholds_of(spec)))
        os.environ["RQ_JOB_ID"] = job.id
        logs.bind(job_id=job.id, attempt=run.attempt.attempt, epoch=run.attempt.epoch, queue=queue.name)
        job.runner = run.run
        return job, queue, execution

    def _horse_stop_requested(self, signum: int, frame: Any) -> None:
        if self._run is not None:
            self._run.request_stop("shutdown")

    def _exit_at_critical(self, usage: int) -> None:
        os._exit(deaths.EXIT_OOM_SELF)

    def _finalize_failure(self, job: ResilientJob, queue: Queue, execution: Execution,  # type: ignore[override]
                          exc_info: Any) -> None:
        """In the horse: control-flow exceptions become exit codes; real failures follow RQ's path.
        (RQ private, pinned in test_rq_pins: the one place every exception of perform_job passes through.)"""
        exc = exc_info[1]
        code = deaths.exit_code_for(exc)
        if code == deaths.EXIT_REDIS_LOST:  # the parent sees only the exit code: say here what Redis did
            log.warning("stepping aside: %s (%s)", reason_for(exc), type(exc).__name__)
        if code is not None:
            os._exit(code)
        try:
            if self._run is not None:
                self._run.record_failure(exc)
        except StaleAttempt:  # superseded: the job's RQ record belongs to the newer attempt now
            os._exit(deaths.EXIT_STALE)
        super()._finalize_failure(job, queue, execution, exc_info)

    # --- parent: while the horse runs ------------------------------------------------------------
    def maintain_heartbeats(self, job: ResilientJob, execution: Execution) -> None:  # type: ignore[override]
        """Every monitor tick: RQ's heartbeats, and our lease; a refused renewal means we were superseded."""
        run = self._run
        try:
            super().maintain_heartbeats(job, execution)
            if run is None:
                return
            checkpoint_age = run.renew()
        except REDIS_AWAY as exc:  # keep watching the horse; reapers do not count an outage against it
            log.warning("cannot renew the lease of job %s: %s", job.id, exc)
            return
        except StaleAttempt:
            if run is not None and self.horse_pid and not run.ended_itself():
                log.warning("job %s: this attempt was taken over (lease lost); stopping it", job.id)
                run.superseded = True
                self.kill_horse()
            return
        if self.horse_pid and run.stalled(checkpoint_age):
            self._signal_horse(signal.SIGKILL)

    # --- parent: after the horse ----------------------------------------------------------------
    def handle_work_horse_killed(self, job: ResilientJob, retpid: int, ret_val: int, rusage: Any) -> None:
        # untyped in RQ
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)  # type: ignore[no-untyped-call]
        self._judge(job, retpid, ret_val, rusage)

    def _begin(self, job: ResilientJob, spec: JobSpec) -> tuple[str, AttemptRun | Attempt | str]:
        """BEGIN, waiting out Redis being away: a failover can take longer than the client's retries (Sentinel's
        default is 30 s to call a primary down). A start a failover lost is not tried again here (WriteLost)."""
        return keep_trying(
            lambda: AttemptRun.begin(job.id, spec, self.store, self.memory, self.settings, self.name, self.host),
            REDIS_AWAY, lambda exc: None if isinstance(exc, WriteLost) else f"cannot start job {job.id}: {reason_for(exc)}",
            lambda: health.mark_alive("worker", self.name))

    def _despite_redis_away(self, what: str, action: Callable[[], T]) -> T:
        """Run `action`; while Redis cannot take it (unreachable, full, read-only), say why, wait and retry.
        The worker stays live meanwhile: an outage is no reason to lose what it knows about a job."""
        return keep_trying(action, REDIS_AWAY, lambda exc: f"cannot {what}: {reason_for(exc)}",
                           lambda: health.mark_alive("worker", self.name))

    def _judge(self, job: ResilientJob, pid: int, wait_status: int, rusage: Any) -> Outcome | None:
        """The run's outcome, judged once and kept on it (Redis away: waited for, see _despite_redis_away)."""
        run = self._run
        if run is None:
            return None
        if run.outcome is None:
            base = 0.0 if self._burst else self.settings.retry_backoff  # a burst worker must not leave jobs behind
            run.outcome = self._despite_redis_away(f"record how job {job.id} ended",
                                                   lambda: run.judge(pid, wait_status, rusage, job.origin, base))
        return run.outcome

    def handle_job_failure(self, job: ResilientJob, queue: Queue, started_job_registry: Any = None,  # type: ignore[override]
                           exc_string: str = "", execution: Execution | None = None) -> None:
        outcome = self._run.outcome if self._run is not None else None
        if outcome is None:
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
            return
        self._despite_redis_away(f"requeue or park job {job.id}",
                                 lambda: self._settle(job, queue, started_job_registry, execution, *outcome))

    def _settle(self, job: ResilientJob, queue: Queue, started_job_registry: Any, execution: Execution | None,
                death: Death, decision: Decision | None) -> None:
        """After a judged death: park or requeue the job (attempt.settle), then RQ's side of it: a parked
        job goes to RQ's failed registry; a requeued or superseded one leaves only its execution record."""
        assert self._run is not None
        settled = decision is not None and settle(self.store, self._run.attempt, death, decision)
        if settled and decision is not None and decision.action == "park":
            super().handle_job_failure(job, queue, started_job_registry, f"parked: {decision.reason}", execution)
        else:
            self._forget_execution(job, execution)

    def _forget_execution(self, job: ResilientJob, execution: Execution | None) -> None:
        with self.connection.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            pipe.execute()

    # --- memory pressure: take no new job while the worker's memory is under pressure ---------------
    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        while not self.stopping:  # (a stop noted while a job was in hand, see request_stop)
            self._wait_for_headroom()
            self._wait_out_pressure()
            try:
                result = self._despite_redis_away(
                    "take a job",
                    lambda: super(ResilientWorker, self).dequeue_job_and_maintain_ttl(timeout, max_idle_time))
            except BadQueueEntry as exc:  # one malformed record fails that job, not the worker
                self._refuse(exc.job_id, exc.queue, str(exc))
                continue
            if result is None:
                self._drained = True
                return None
            # From here to prepare_execution a SIGTERM must not strand the job (request_stop). The few
            # bytecodes inside RQ between its BLMOVE and this line stay open: the reaper rescues what they strand.
            self._job_in_hand = True
            if self.memory.level() == Level.OK:
                return result
            self._hand_back(*result)  # pressure arrived while we were blocked
            self._job_in_hand = False
        return None

    def _hand_back(self, job: Job, queue: Queue) -> None:
        """Return a job taken off its queue, untouched, to the front of that queue."""
        with self.connection.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            queue.push_job_id(job.id, pipeline=pipe, at_front=True)
            pipe.execute()

    def _wait_out_pressure(self) -> None:
        level = self.memory.level()
        if level == Level.OK:
            return
        log.warning("memory %s (%s of %s): taking no new job until it drops", level,
                    format_size(self.memory.usage()), format_size(self.memory.limit.bytes))
        while not self.stopping:
            self.pressure_waits += 1
            self._our_beat_at = float("-inf")  # publish pressure_waits at once
            self.heartbeat()
            time.sleep(PRESSURE_POLL)
            if self.memory.level() == Level.OK:
                break
        log.info("memory pressure gone: taking jobs again")
        self.heartbeat()

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's look at `rq suspend`, which also beats on a pipeline of its own: when Redis cannot take
        writes it is skipped (the dequeue that follows waits for Redis, saying why)."""
        try:
            super().check_for_suspension(burst)
        except REDIS_AWAY as exc:
            log.warning("suspension check skipped: %s", reason_for(exc))

    def run_maintenance_tasks(self) -> None:
        """RQ's registry clean-up writes; when Redis cannot take writes it waits for the next round."""
        try:
            super().run_maintenance_tasks()  # type: ignore[no-untyped-call]  # untyped in RQ
        except REDIS_AWAY as exc:
            log.warning("registry clean-up skipped: %s", reason_for(exc))

    @property
    def dequeue_timeout(self) -> int:
        """Wake up every second while idle: to heartbeat, watch memory and release delayed retries."""
        return 1

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's heartbeat, plus ours at most once a second: liveness file, delayed retries, memory status.
        (RQ beats several times per job; doing our part every time would cost throughput.)"""
        if self.is_horse:
            super().heartbeat(timeout, pipeline)
            if pipeline is not None and self._run is not None:
                # RQ's prepare_job_execution beats on its pipeline before the job runs (pinned in test_rq_pins)
                self._run.note_horse(pipeline)
            return
        try:
            self._beat(timeout, pipeline)
        except REDIS_AWAY as exc:  # the next beat tries again; taking jobs waits in dequeue meanwhile
            log.warning("heartbeat: %s", reason_for(exc))

    def _beat(self, timeout: int | None, pipeline: Any) -> None:
        now = time.monotonic()
        ours_due = now - self._our_beat_at >= OUR_BEAT_INTERVAL
        if ours_due:
            health.mark_alive("worker", self.name)  # before any Redis call: liveness must not need Redis
        rq_due = timeout is not None or ours_due or now - self._rq_beat_at >= RQ_BEAT_REPEAT
        if pipeline is None and not rq_due:
            return  # an idle mark waits for the pipeline that comes next (the suspension check's) or for this
        if pipeline is None:  # RQ's three commands in one round trip, not three
            with self.connection.pipeline(transaction=False) as beat:
                self._rq_beat(timeout, beat, now, rq_due)
                beat.execute()
        else:
            self._rq_beat(timeout, pipeline, now, rq_due)
        if not ours_due:
            return
        self._our_beat_at = now
        if pipeline is None:
            self.store.promote_due()
        memory_now = self.memory.status(self.horse_pid)
        metrics.memory(memory_now["rss"], memory_now["limit"], memory_now["level"])
        if memory_now["group"]:
            metrics.group(memory_now["group"], memory_now["rss"], memory_now["limit"], memory_now["horse_rss"])
        waiting_job, need = self._waiting_for or ("", Need(None))
        status = {**memory_now, "pressure_waits": self.pressure_waits, "host": self.host, "beat_at": int(time.time()),
                  "pid": os.getpid(), "job": self._run.attempt.job_id if self._run else "",
                  "headroom_waits": self.headroom_waits, "waiting_job": waiting_job,
                  "waiting_expected": need.expected or 0}
        connection = pipeline if pipeline is not None else self.connection
        # hset's Mapping[FieldT, ...] is invariant in its key type: a dict[str, Any] needs the cast
        connection.hset(keys.worker_status(self.name), mapping=cast(dict[FieldT, EncodableT], status))
        connection.expire(keys.worker_status(self.name), self.worker_ttl + 60)

    def _rq_beat(self, timeout: int | None, pipeline: Any, now: float, due: bool) -> None:
        if self._idle_unsent:
            super().set_state(WorkerStatus.IDLE, pipeline)
            self._idle_unsent = False
        if due:
            super().heartbeat(timeout, pipeline)
            self._rq_beat_at = now

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """RQ marks the worker idle after each job and again as it dequeues, each time a round trip of its own:
        an idle mark rides on the next beat instead (within RQ_BEAT_REPEAT)."""
        if state == WorkerStatus.IDLE and pipeline is None and not self.is_horse:
            self._idle_unsent = self._idle_unsent or self.get_state() != WorkerStatus.IDLE
            self._state = state  # RQ private (pinned in test_rq_pins): what its set_state keeps
            return
        self._idle_unsent = False
        super().set_state(state, pipeline)

    # --- shutdown ---------------------------------------------------------------------------------
    def teardown(self) -> None:
        """RQ's farewell (unregister, unsubscribe) retries each write for ~15 s while Redis is away, so a
        stopped worker outlived a container's stop grace. Say it through a client that does not retry, and
        only to a Redis that answers at once: the worker's keys expire on their own otherwise."""
        if self.is_horse:
            super().teardown()  # type: ignore[no-untyped-call]  # untyped in RQ
            return
        self.connection = impatient_client(self.connection, FAREWELL_TIMEOUT)
        try:
            self.connection.ping()
            super().teardown()  # type: ignore[no-untyped-call]  # untyped in RQ
        except REDIS_AWAY as exc:
            log.warning("left without unregistering (%s); the worker's record expires on its own", reason_for(exc))
            if self.pubsub_thread is not None:  # RQ's subscriber (a daemon thread): leave its socket to exit
                self.pubsub_thread.stop()
        finally:
            self.connection.close()

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]  # untyped in RQ
        self._ask_horse_to_step_aside()

    def _ask_horse_to_step_aside(self) -> None:
        if self.horse_pid and self._grace_timer is None:
            log.info("asking job to checkpoint and step aside (grace %.0f s)", self.settings.shutdown_grace)
            self._signal_horse(signal.SIGUSR1)
            self._grace_timer = threading.Timer(self.settings.shutdown_grace, self._grace_expired)
            self._grace_timer.daemon = True
            self._grace_timer.start()

    def _signal_horse(self, sig: signal.Signals) -> None:
        try:
            os.kill(self.horse_pid, sig)
        except ProcessLookupError:
            pass

    def _grace_expired(self) -> None:
        if self.horse_pid and self._run is not None:
            log.warning("job did not reach a safe point within %.0f s; stopping it", self.settings.shutdown_grace)
            self._run.killed_for = "shutdown"
            self._signal_horse(signal.SIGKILL)

    def _cancel_grace_timer(self) -> None:
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None

    def request_force_stop(self, signum: int, frame: Any) -> None:
        """Second SIGTERM: stop now; the job still resumes from its last checkpoint elsewhere."""
        # RQ private (pinned in test_rq_pins): when the first request came; RQ's own handler reads it too
        if self._shutdown_requested_date and now() - self._shutdown_requested_date < timedelta(seconds=1):
            return
        log.warning("cold shutdown")
        if self.horse_pid and self._current is not None and self._run is not None:
            job, queue = self._current
            self._run.killed_for = "shutdown"
            pid = self.horse_pid
            self.kill_horse()
            _, status, rusage = self.wait_for_horse()
            self._horse_pid = 0  # RQ private: monitor_work_horse clears it, but this wait was our own
            outcome = self._judge(job, pid, status or 0, rusage)
            if outcome is not None:
                self._settle(job, queue, queue.started_job_registry, self._execution, *outcome)
        raise SystemExit(0)
