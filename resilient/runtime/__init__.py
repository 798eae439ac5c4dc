"""What runs jobs: the worker (an RQ worker), one attempt from begin to settle, death verdicts and rules,
the supervisor (reaper and worker manager), child processes, and the worker's view of memory."""
