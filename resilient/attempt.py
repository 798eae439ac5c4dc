"""How an attempt's end is carried out, the same for every way it ends: a worker that judged its horse's
exit and a reaper that found a lease expired both decide with deaths.decide and settle here."""

from __future__ import annotations

import logging

from .errors import StaleAttempt
from .model import Attempt, Death, Decision
from .store import Store

log = logging.getLogger("resilient.attempt")


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
