"""One idea: ctx.iterate makes a loop over items resumable. Used by `resilient demo`.

    resilient worker examples.squares
    resilient enqueue examples.squares.sum_squares '[200]'
"""

from __future__ import annotations

import time

import resilient


@resilient.job(queue="demo", checkpoint_every=0.5)
def sum_squares(ctx: resilient.Context, n: int, seconds_per_item: float = 0.05) -> int:
    """Sum i*i for i < n, one slow item at a time; a killed run resumes where it saved."""
    total = 0
    if isinstance(ctx.checkpoint, dict):
        total = ctx.checkpoint.get("total", 0)
    position = ctx.checkpoint["position"] if isinstance(ctx.checkpoint, dict) else 0
    for i in range(position, n):
        time.sleep(seconds_per_item)  # stands for real work
        total += i * i
        ctx.progress(i + 1, n)
        ctx.save({"position": i + 1, "total": total})
    return total
