"""`./dev bench`: the benchmarks that exist so far (the side-by-side RQ table is issue 6)."""

import tempfile
from pathlib import Path

from resilient.server import stop_server

from .safe_point import measure

data_dir = Path(tempfile.mkdtemp(prefix="resilient-bench-"))
try:
    for name, value in measure(data_dir).items():
        print(f"{name}: {value:.0f}")
finally:
    stop_server(data_dir)
