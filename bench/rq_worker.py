"""`python -m bench.rq_worker [--cgroup DIR] -- ARGS`: rq's own `rq worker ARGS`, optionally started
inside a memory cgroup the benchmark made (the process moves itself in before it imports rq or
allocates anything for a job, so the kernel charges all of the worker and its horses to that group).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rq_worker")
    parser.add_argument("--cgroup", type=Path, help="a memory cgroup directory to run in")
    parser.add_argument("rq_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.cgroup is not None:
        from resilient.memory.cgroup import Cgroup, move_into

        version = 1 if (args.cgroup / "memory.limit_in_bytes").exists() else 2
        move_into(Cgroup(version, args.cgroup), os.getpid())
    rq_args = args.rq_args[1:] if args.rq_args[:1] == ["--"] else args.rq_args
    from rq.cli import main as rq_main

    rq_main(["worker", *rq_args], prog_name="rq")


if __name__ == "__main__":
    main()
