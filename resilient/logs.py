"""Log set-up for the long-running commands (worker, supervisor)."""

from __future__ import annotations

import logging


def log_to_stderr(level: str) -> None:
    """resilient's own loggers to stderr, one line per event, next to RQ's."""
    logger = logging.getLogger("resilient")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())
