"""Test your own jobs' resume logic in plain pytest, without Redis, a worker or a kill.

    from resilient.testing import assert_resumable, run

    def test_count_words_resumes():
        assert run(count_words, ["a b", "c"]) == 3        # inline, with a real Context
        assert_resumable(count_words, ["a b", "c"])       # killed at every safe point, resumed, compared

run() calls the job once in this process, with the real Context over an in-memory checkpoint store (the
real codec: a state that fails in a worker fails here). assert_resumable() then kills it at each safe point
(only what was persisted survives, as with SIGKILL), resumes it as the next attempt, and raises NotResumable
when the result, or how often an effect ran (ctx.once, record_effect), differs from the uninterrupted run.
"""

from .attempts import KitError
from .effects import record_effect
from .local import run
from .resumable import NotResumable, Report, assert_resumable

__all__ = ["KitError", "NotResumable", "Report", "assert_resumable", "record_effect", "run"]
