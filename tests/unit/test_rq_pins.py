"""What resilient relies on in rq 3.x that rq does not promise publicly (private names, and behaviour the
worker works around). An rq upgrade that changes any of it fails here first, naming the thing."""

from __future__ import annotations

import inspect
import signal

import pytest
import rq
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.worker import Worker


def test_rq_is_3x():
    assert rq.__version__.split(".")[0] == "3", "pyproject pins rq>=3.0,<4: check the pins below on an upgrade"


def test_private_worker_state_we_read_and_set(redis_client):
    """_stop_requested / _shutdown_requested_date (noting a stop while a job is in hand, exit code),
    _horse_pid (cleared after a cold stop's own wait)."""
    worker = Worker(["q"], connection=redis_client)
    assert worker._stop_requested is False
    assert worker._shutdown_requested_date is None
    assert worker._horse_pid == 0


def test_the_idle_mark_can_wait_for_the_next_beat():
    """ResilientWorker.set_state keeps an idle mark in _state (as RQ's own does) and sends it with the next
    beat: RQ's suspension check, at the top of every loop, beats on its own pipeline."""
    import rq.suspension

    assert "self._state = state" in inspect.getsource(Worker.set_state)
    assert "worker.heartbeat(pipeline=pipeline)" in inspect.getsource(rq.suspension.is_suspended)
    loop = inspect.getsource(Worker.work)
    assert loop.index("self.check_for_suspension(burst)") < loop.index("self.dequeue_job_and_maintain_ttl(")


def test_what_a_reused_horse_sets_up_as_rqs_own_horse_does():
    """A reused horse runs perform_job itself for each job after its first: it marks itself a horse as
    main_work_horse does (_is_horse), and builds the execution the parent created from its id and start."""
    source = inspect.getsource(Worker.main_work_horse)
    assert "self._is_horse = True" in source and "self.perform_job(job, queue, self.execution)" in source
    assert list(inspect.signature(Execution).parameters) == ["id", "job_id", "connection", "worker_name"]
    assert "self.created_at" in inspect.getsource(Execution.__init__)


def test_teardown_says_farewell_through_connection_and_pubsub():
    """ResilientWorker.teardown swaps the connection RQ's register_death writes through for one that does not
    retry, and, with Redis away, stops RQ's subscriber thread (pubsub_thread) without RQ's unsubscribe."""
    assert "self.connection.pipeline()" in inspect.getsource(Worker.register_death)
    assert "self.pubsub_thread = self.pubsub.run_in_thread(" in inspect.getsource(Worker.subscribe)
    assert "daemon=True" in inspect.getsource(Worker.subscribe)


def test_failures_in_the_horse_go_through_finalize_failure():
    """Preempted, stale and Redis-away exits are taken in _finalize_failure, which perform_job calls for
    every exception with (job, queue, execution, exc_info)."""
    assert "_finalize_failure(job, queue, execution, sys.exc_info())" in inspect.getsource(Worker.perform_job)
    assert list(inspect.signature(Worker._finalize_failure).parameters) == [
        "self", "job", "queue", "execution", "exc_info"]


def test_the_horse_resets_signals_through_setup_work_horse_signals():
    """The horse keeps our SIGTERM handler by replacing this method on its instance before RQ calls it."""
    assert "self.setup_work_horse_signals()" in inspect.getsource(Worker.main_work_horse)


def test_an_idle_worker_raises_stop_requested_from_the_signal_handler(redis_client):
    """Why request_stop is overridden: RQ raises wherever the signal lands unless it thinks the worker busy."""
    worker = Worker(["q"], connection=redis_client)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with pytest.raises(StopRequested):
            worker.request_stop(signal.SIGTERM, None)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def test_what_an_enqueue_sets_before_saving(redis_client):
    """Queue._prepare_for_queue sets the fields RQ's own enqueue saves (status, origin, enqueued_at): our
    one-step enqueue (Lua ENQUEUE) saves RQ's record from to_dict() after calling it."""
    from rq.queue import Queue

    queue = Queue("pins", connection=redis_client)
    job = queue.create_job("os.getpid")
    queue._prepare_for_queue(job)
    fields = job.to_dict()
    assert fields["status"] == "queued" and fields["origin"] == "pins" and fields["enqueued_at"]


def test_redis_py_maps_an_errors_first_word_to_its_class():
    """NOREPLICAS becomes our NoReplicasError (Redis away) through redis-py's parser table, which maps an error
    reply's first word to an exception class for commands, scripts and pipelines alike."""
    from redis._parsers.base import BaseParser

    from resilient.storage.connection import NoReplicasError

    assert "cls.EXCEPTION_CLASSES[error_code]" in inspect.getsource(BaseParser.parse_error)
    assert isinstance(BaseParser.parse_error("NOREPLICAS Not enough good replicas to write."), NoReplicasError)


def test_the_horse_beats_on_rqs_pipeline_before_the_job_runs():
    """The horse's pid is queued on the pipeline prepare_job_execution sends, through its heartbeat call."""
    source = inspect.getsource(Worker.prepare_job_execution)
    assert "self.heartbeat(heartbeat_ttl, pipeline=pipeline)" in source and "pipeline.execute()" in source
