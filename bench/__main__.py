"""`python -m bench [--quick] [--only N ...] [--json PATH]` (what `./dev bench` runs).

Starts its own embedded server in a temporary directory, runs every scenario for resilient
and for plain rq (same rq, same server, same job bodies: bench/jobs.py), prints one table and writes
the raw figures to bench/results.json (bench/results-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from importlib.metadata import version
from pathlib import Path
from typing import Callable

from resilient.storage.server import ensure_server, stop_server

from . import footprint, memory, persist, realistic, recovery, safe_point, scale, shared_limit, throughput
from .harness import Env
from .report import Aim, Result, Row, aims_text, table

SCENARIOS: dict[int, tuple[str, Callable[[Env], Result]]] = {
    1: ("throughput", throughput.run),
    2: ("checkpoint persist latency", persist.run),
    3: ("safe-point cost", safe_point.run),
    4: ("recovery after a horse SIGKILL", recovery.run_horse_kill),
    5: ("recovery after a whole-worker SIGKILL", recovery.run_worker_kill),
    6: ("leaky job under a real 300 MB cgroup", memory.run),
    7: ("footprint", footprint.run),
    8: ("several workers, one limit", shared_limit.run),
    9: ("scale", scale.run),
    10: ("a realistic job: 10,000 items of 1 ms", realistic.run),
}
HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds (what CI runs)")
    parser.add_argument("--only", type=int, nargs="+", choices=sorted(SCENARIOS),
                        help="run only these scenarios")
    parser.add_argument("--json", type=Path, help="where to write the raw figures")
    args = parser.parse_args()
    out = args.json or HERE / ("results-quick.json" if args.quick else "results.json")
    workdir = Path(tempfile.mkdtemp(prefix="resilient-bench-"))
    started = time.monotonic()
    results: dict[int, Result] = {}
    errors: dict[int, str] = {}
    try:
        env = Env(ensure_server(workdir / "server").url, workdir, args.quick)
        for number in args.only or sorted(SCENARIOS):
            title, run = SCENARIOS[number]
            print(f"[{time.monotonic() - started:5.0f} s] {number}. {title} ...", file=sys.stderr, flush=True)
            try:
                results[number] = run(env)
            except Exception as exc:  # one broken scenario must not hide the others' figures
                errors[number] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
    finally:
        stop_server(workdir / "server")
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    rows = [row for n in sorted(results) for row in results[n].rows]
    rows += [Row(f"{n}. {SCENARIOS[n][0]}", "error", "error", errors[n]) for n in sorted(errors)]
    aims: list[Aim] = [aim for n in sorted(results) for aim in results[n].aims]
    notes = [note for n in sorted(results) for note in results[n].notes]
    print(table(rows))
    print("\nratio = resilient ÷ rq.  Aims:")
    print(aims_text(aims))
    if notes:
        print("\nNotes:\n" + "\n".join(f"- {note}" for note in notes))
    host = machine()
    mode = "quick" if args.quick else "full"
    print(f"\n{mode} run: {elapsed:.0f} s on {host['summary']}; raw figures in {out}")
    out.write_text(json.dumps({
        "mode": mode, "elapsed_s": elapsed, "machine": host,
        "scenarios": {str(n): {"title": SCENARIOS[n][0], **results[n].as_json()} for n in sorted(results)},
        "errors": {str(n): e for n, e in errors.items()},
    }, indent=1, default=str))
    return 1 if errors else 0


def machine() -> dict[str, object]:
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cores = os.cpu_count() or 0
    info = {"cores": cores, "ram_gib": round(ram / 2**30, 1), "kernel": platform.release(),
            "python": platform.python_version(), "rq": version("rq"), "redis_py": version("redis"),
            "server": _server_version()}
    info["summary"] = f"{cores} cores, {info['ram_gib']} GiB RAM, kernel {info['kernel']}, rq {info['rq']}"
    return info


def _server_version() -> str:
    from resilient.storage.server import find_server_binary

    try:
        done = subprocess.run([str(find_server_binary()), "--version"], capture_output=True, text=True,
                              timeout=5)
        return done.stdout.strip()
    except Exception as exc:  # informational only
        return f"unknown ({exc})"


if __name__ == "__main__":
    sys.exit(main())
