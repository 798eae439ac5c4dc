"""Operator actions on jobs."""

from __future__ import annotations

from ..api.client import Client
from ..errors import NoSuchJob
from ..model import JobStatus
from ..runtime.rqjob import fetch_rq_job, rebuild_rq_job

CANCELLED = "cancelled by an operator"  # the error a cancelled job ends with
NOT_RELEASABLE = (JobStatus.COMPLETED, JobStatus.QUEUED)  # what RELEASE refuses; checked here only to skip a needless rebuild


def full_job_id(client: Client, typed: str) -> str:
    """The job id a person meant: the id itself, or the one job whose id starts with it (`top` shows ids
    cut to 12 characters). Several: NoSuchJob asks for more of it."""
    if client.store.job_fields(typed):
        return typed
    matches = client.store.job_ids_starting_with(typed)
    if len(matches) > 1:
        raise NoSuchJob(f"more than one job id starts with {typed!r} ({', '.join(matches)}, …); give more of it")
    return matches[0] if matches else typed


def requeue_job(client: Client, job_id: str, attempts: int = 10, restart: bool = False) -> str:
    """Put a parked or failed job back at the front of its queue; it resumes from its checkpoint, or from
    the beginning with `restart` (the checkpoint is dropped; its history stays for inspect). RQ's record of
    the job is rebuilt from ours if it expired; the requeue itself is one step."""
    fields = client.store.job_fields(job_id)
    if not fields:
        raise NoSuchJob(f"no job {job_id}; `resilient parked` lists parked jobs")
    if fields["status"] not in NOT_RELEASABLE and fetch_rq_job(job_id, client.connection) is None:
        call = client.store.job_call(job_id)
        if call is None or "corrupt" in call:
            raise NoSuchJob(f"job {job_id} has no RQ record left and no kept arguments to rebuild it from "
                            "(enqueued by an older version); enqueue it again")
        rebuild_rq_job(job_id, fields["name"], fields["queue"], call, client.connection, client.settings.result_ttl)
    outcome = client.store.release(job_id, attempts, restart)
    if outcome == "MISSING":
        raise NoSuchJob(f"no job {job_id}; `resilient parked` lists parked jobs")
    if outcome == "NO_RQ_RECORD":
        raise NoSuchJob(f"job {job_id}: its RQ record expired just now; run `resilient requeue {job_id}` again")
    if outcome != "OK":
        return f"job {job_id} is {outcome}; nothing to do"
    return f"job {job_id} requeued on {fields['queue']}"


def cancel_job(client: Client, job_id: str) -> str:
    """Stop retrying a parked job for good: it ends as failed ("cancelled by an operator"), its keys expire
    as a failed job's do. Only a parked job can be cancelled here (a running one is its worker's)."""
    outcome = client.store.cancel_parked(job_id, CANCELLED)
    if outcome == "MISSING":
        raise NoSuchJob(f"no job {job_id}; `resilient parked` lists parked jobs")
    if outcome != "OK":
        return f"job {job_id} is {outcome}, not parked; nothing to do"
    return f"job {job_id} cancelled"
