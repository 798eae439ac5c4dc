"""Logging for the long-running commands: one line per event, JSON when not on a terminal (or asked),
carrying the job's context (job_id, attempt, epoch, queue, worker) when there is one."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_context: dict[str, Any] = {}
CONTEXT_FIELDS = ("worker", "job_id", "attempt", "epoch", "queue")


def bind(**fields: Any) -> None:
    """Add fields to every log line from now on (a worker binds its name, then each job's)."""
    _context.update({k: v for k, v in fields.items() if v is not None})


def unbind(*names: str) -> None:
    for name in names:
        _context.pop(name, None)


class _AddContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({name: getattr(record, name) for name in CONTEXT_FIELDS if hasattr(record, name)})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        job = getattr(record, "job_id", None)
        return f"{text}  [job {job} attempt {getattr(record, 'attempt', '?')}]" if job else text


def log_to_stderr(level: str, fmt: str = "auto") -> None:
    """One handler on the root logger for resilient's and RQ's lines alike (RQ then adds none of its own).
    fmt: "json", "text", or "auto" (JSON unless stderr is a terminal)."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_resilient", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    handler.addFilter(_AddContext())
    handler._resilient = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    for name in ("resilient", "rq"):
        logging.getLogger(name).setLevel(level.upper())
