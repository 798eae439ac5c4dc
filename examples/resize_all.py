"""One idea: for a list of items, ctx.iterate is all the checkpointing you need.

    resilient worker examples.resize_all
    resilient enqueue examples.resize_all.checksum_all '[["a", "b", "c"]]'
"""

from __future__ import annotations

import hashlib

import resilient


@resilient.job(queue="files", checkpoint_every=2.0)
def checksum_all(ctx: resilient.Context, names: list[str]) -> int:
    """Hash every name; after a death it skips the names already done (position is saved for you)."""
    done = 0
    for name in ctx.iterate(names):
        hashlib.sha256(name.encode() * 10_000).hexdigest()
        done += 1
    return len(names)
