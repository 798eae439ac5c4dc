"""Health files: private to the user, never written through a symlink, counted only for our processes."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from resilient.ops.health import check_live, forget, health_dir, mark_alive


def test_default_dir_is_private_to_the_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without RESILIENT_HEALTH_DIR the files go to a 0700 directory of this user's, not a shared one."""
    monkeypatch.delenv("RESILIENT_HEALTH_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    mark_alive("worker", "w1")
    try:
        directory = health_dir()
        assert directory.name.endswith(str(os.getuid()))
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert directory.stat().st_uid == os.getuid()
    finally:
        forget("worker")


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private health dir set as RESILIENT_HEALTH_DIR."""
    path = tmp_path / "health"
    path.mkdir(mode=0o700)
    monkeypatch.setenv("RESILIENT_HEALTH_DIR", str(path))
    return path


def test_a_planted_symlink_is_not_written_through(tmp_path: Path, directory: Path) -> None:
    """A symlink where the tick file goes is replaced; the file it points to is left alone."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (directory / f"worker-{os.getpid()}").symlink_to(victim)
    mark_alive("worker", "w1")
    try:
        assert victim.read_text() == "precious"
        tick = directory / f"worker-{os.getpid()}"
        assert not tick.is_symlink() and tick.read_text().splitlines()[0] == "w1"
    finally:
        forget("worker")


def test_only_our_own_processes_count_as_alive(directory: Path) -> None:
    """A fresh file naming a live process that is not a resilient worker does not make the probe pass."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        (directory / f"worker-{other.pid}").write_text("not-a-worker")
        ok, message = check_live()
        assert not ok, message
    finally:
        other.kill()
        other.wait(10)
