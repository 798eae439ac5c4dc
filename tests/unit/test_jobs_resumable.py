"""The project's own example jobs and test jobs resume correctly from a death at any safe point
(resilient.testing.assert_resumable)."""

from __future__ import annotations

import pytest
import testjobs

from examples import resize_all, squares
from resilient.testing import assert_resumable

URL = "redis-url"  # stands for the session server's URL, filled in by the test

# Jobs and the arguments they are checked with. Left out, because a kill or a resume is what they are about:
# die_at_once and leave_children kill their own process; hangs_once stops it (SIGSTOP); spike_once,
# grow_without_safe_points, preempt_once and preempt_then_spike return the attempt or the previous death they
# saw, or loop until a worker preempts them, as does hold_ballast until memory pressure; child_then_work leaves
# a `sleep` child; breaks_rq_bookkeeping breaks RQ's registry on purpose.
CHECKED = [
    (squares.sum_squares, (40, 0.0)),
    (resize_all.checksum_all, (["a", "b", "c", "d"],)),
    (testjobs.count_items, (URL, 20, 0.0)),
    (testjobs.iterate_items, (URL, 20, 0.0)),
    (testjobs.slow_saver, (URL, 3)),
    (testjobs.leaky, (URL, 6, 0)),
    (testjobs.quiet_sum, (40, 0.0)),
    (testjobs.durable_sum, (40, 0.0, 7)),
    (testjobs.chaos_sum, (URL, 20, 0.0)),
    (testjobs.batches, (4, 0, 3, 0.0)),
    (testjobs.calm_batches, (4, 0, 3, 0.0)),
    (testjobs.growing, (10, 0, 0.0)),
    (testjobs.steady, (10, 0, 0.0)),
    (testjobs.mail_each, (URL, ["ann", "bob", "cy", "dee"], 0.0)),
    (testjobs.side_effect, (URL, "log")),
    (testjobs.always_too_big, (0,)),
    (testjobs.declared_too_big, (URL, "log")),
]


@pytest.mark.parametrize(("job", "args"), CHECKED, ids=[job.name for job, _ in CHECKED])
def test_the_projects_jobs_resume_to_the_same_result(job, args, redis_url):
    """Killed at each safe point (and preempted for memory there), resumed: the uninterrupted result."""
    args = tuple(redis_url if arg == URL else arg for arg in args)
    assert_resumable(job, *args, memory=True)
    assert_resumable(job, *args, deaths=3, persist_every=3, seed=17)
