"""Settings: the only place that reads resilient's settings from the environment. (prometheus-client reads
its own PROMETHEUS_MULTIPROC_DIR, which metrics.py sets for it.)"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .model import DEFAULT_THRESHOLDS

MiB = 1024 * 1024
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": MiB, "g": 1024 * MiB, "t": 1024 * 1024 * MiB}
DURABILITIES = ("none", "replica")


def parse_size(text: str | int) -> int:
    """'300M', '1.5GiB', '512k' or a plain byte count -> bytes."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"cannot read {text!r} as a size: use bytes or a number with K, M, G (e.g. 300M)")
    number, unit, _ = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | int) -> int:
    """'90s', '15m', '12h', '7d', '2w' or a plain number of seconds -> seconds."""
    if isinstance(text, int):
        return text
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"cannot read {text!r} as a duration: use seconds or a number with s, m, h, d, w (e.g. 7d)")
    number, unit = match.groups()
    return int(float(number) * _SECONDS[unit.lower()])


def format_size(size: int | None) -> str:
    """Bytes as people read them: 512 B, 3.4 KiB, 298.0 MiB, 1.50 GiB."""
    if size is None:
        return "unknown"
    if size < 1024:
        return f"{size} B"
    if size < MiB:
        return f"{size / 1024:.1f} KiB"
    if size < 1024 * MiB:
        return f"{size / MiB:.1f} MiB"
    return f"{size / (1024 * MiB):.2f} GiB"


def parse_fraction(name: str, text: str | float) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise ConfigError(f"{name} must be a fraction between 0 and 1, got {text}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything a worker, supervisor or client needs to know; immutable once built."""

    redis_url: str | None = None  # None: use the embedded server under data_dir
    data_dir: Path = Path(".resilient")
    max_checkpoint_bytes: int = 16 * MiB
    checkpoint_history: int = 10
    event_history: int = 1000
    shutdown_grace: float = 20.0
    monitor_interval: float = 1.0
    memory_limit: int | None = None
    soft: float = DEFAULT_THRESHOLDS.soft
    hard: float = DEFAULT_THRESHOLDS.hard
    critical: float = DEFAULT_THRESHOLDS.critical
    psi_threshold: float = DEFAULT_THRESHOLDS.psi_some_avg10
    sample_interval: float = 0.1
    lease_ttl: float = 10.0
    retry_backoff: float = 1.0  # seconds before the first retry after a death; doubles per death in a row
    retry_backoff_max: float = 60.0
    result_ttl: int = 7 * 24 * 3600  # RQ's own records of a job (RQ's result and failure TTL)
    keep: int = 7 * 24 * 3600  # seconds our keys of a completed job are kept (a job's own `keep` wins)
    keep_failed: int = 30 * 24 * 3600  # ... of a failed or parked job (or its own `keep`, if longer)
    redis_high_water: float = 0.9  # of Redis's maxmemory: above it, enqueue refuses new jobs
    stall_timeout: float = 0.0  # seconds without a checkpoint before a horse counts as hung; 0: never
    jobs_per_process: int = 1  # jobs one horse runs before it is replaced (1: a fresh fork per job, as rq)
    recycle_at: float = 0.5  # of L: a reused horse whose RSS after a job is above this is replaced
    # "replica": BEGIN, CLAIM, FINISH, ONCE and ctx.save(durable=True) return only once a replica has them (WAIT 1),
    # so that a Sentinel failover cannot lose them (storage/durability.py); "none": Redis's own acknowledgement
    durability: str = "none"
    durability_timeout: float = 1.0  # seconds one WAIT gives a replica before the write is confirmed again

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Defaults, then RESILIENT_* / REDIS_URL from the environment, then explicit overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        url = env.get("RESILIENT_REDIS_URL") or env.get("REDIS_URL") or _read_url_file(env)
        if url:
            values["redis_url"] = url
        readers = {
            "data_dir": Path,
            "max_checkpoint_bytes": parse_size,
            "checkpoint_history": int,
            "shutdown_grace": float,
            "memory_limit": parse_size,
            "soft": lambda v: parse_fraction("soft", v),
            "hard": lambda v: parse_fraction("hard", v),
            "critical": lambda v: parse_fraction("critical", v),
            "psi_threshold": float,
            "lease_ttl": float,
            "retry_backoff": float,
            "retry_backoff_max": float,
            "stall_timeout": float,
            "jobs_per_process": int,
            "recycle_at": lambda v: parse_fraction("recycle_at", v),
            "keep": parse_duration,
            "keep_failed": parse_duration,
            "redis_high_water": lambda v: parse_fraction("redis_high_water", v),
            "durability": str.strip,
            "durability_timeout": float,
        }
        for field, read in readers.items():
            raw = env.get(f"RESILIENT_{field.upper()}")
            if raw:
                values[field] = _read(field, read, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).checked()

    def with_(self, **changes: Any) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None}).checked()

    def checked(self) -> "Settings":
        if not self.soft < self.hard < self.critical <= 1:
            raise ConfigError(
                f"memory thresholds must rise: soft {self.soft} < hard {self.hard} < critical {self.critical} <= 1"
            )
        if self.jobs_per_process < 1:
            raise ConfigError(f"jobs_per_process must be at least 1, got {self.jobs_per_process}")
        if not 0 < self.recycle_at <= 1:
            raise ConfigError(f"recycle_at must be a fraction of the memory limit between 0 and 1, got {self.recycle_at}")
        if self.checkpoint_history < 1:
            raise ConfigError("checkpoint_history must be at least 1")
        if self.durability not in DURABILITIES:
            raise ConfigError(f"durability {self.durability!r} is not one of {', '.join(DURABILITIES)} "
                              "(RESILIENT_DURABILITY=replica waits for a replica on the writes a failover must keep)")
        if self.durability_timeout <= 0:
            raise ConfigError("durability_timeout must be more than 0 seconds (RESILIENT_DURABILITY_TIMEOUT)")
        return self


def configured_health_dir() -> Path | None:
    """RESILIENT_HEALTH_DIR: where local workers and supervisors tick for `resilient health`. Read apart from
    Settings because every loop tick needs it, including before any Settings exist."""
    raw = os.environ.get("RESILIENT_HEALTH_DIR")
    return Path(raw) if raw else None


def _read(field: str, read: Any, raw: str) -> Any:
    try:
        return read(raw)
    except (ValueError, ConfigError) as exc:
        raise ConfigError(f"RESILIENT_{field.upper()}={raw!r}: {exc}") from None


def _read_url_file(env: Mapping[str, str]) -> str | None:
    path = env.get("REDIS_URL_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"REDIS_URL_FILE={path}: {exc.strerror}") from None


def web_token(token_file: Path | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """The token the dashboard's actions need: the first line of `token_file`, else RESILIENT_WEB_TOKEN;
    None (read-only) when neither is given."""
    env = os.environ if env is None else env
    if token_file is None:
        return env.get("RESILIENT_WEB_TOKEN", "").strip() or None
    try:
        lines = token_file.read_text().strip().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read the web token file {token_file} ({exc.strerror}); "
                          "write the token into it, or set RESILIENT_WEB_TOKEN") from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"the web token file {token_file} is empty; write the token into it")
    return lines[0].strip()
