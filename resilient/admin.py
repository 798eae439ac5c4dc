"""Operator actions on jobs."""

from __future__ import annotations

from .client import Client
from .errors import NoSuchJob
from .rqjob import fetch_rq_job, rq_queue


def requeue_job(client: Client, job_id: str, attempts: int = 10, restart: bool = False) -> str:
    """Put a parked or failed job back at the front of its queue; it resumes from its checkpoint, or from
    the beginning with `restart` (the checkpoint is dropped; its history stays for inspect)."""
    outcome = client.store.release(job_id, attempts)
    if outcome == "MISSING":
        raise NoSuchJob(f"no job {job_id}; `resilient parked` lists parked jobs")
    if outcome != "OK":
        return f"job {job_id} is {outcome}; nothing to do"
    job = fetch_rq_job(job_id, client.connection)
    if job is None:
        raise NoSuchJob(f"job {job_id} has no RQ record left (expired?); enqueue it again")
    if restart:
        client.store.drop_checkpoint(job_id)
    queue = rq_queue(client.store.job_fields(job_id)["queue"], client.connection)
    queue.failed_job_registry.remove(job)
    queue.enqueue_job(job, at_front=True)
    return f"job {job_id} requeued on {queue.name}"
