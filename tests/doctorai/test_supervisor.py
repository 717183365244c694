"""The supervisor starts processes that do not wait on each other together, and says which one failed."""

import sys
from pathlib import Path

import pytest

from doctorai.stack import Spec, StackError, Supervisor

# Writes its own marker, then waits for the other's before it says it is ready.
WAIT_FOR_OTHER = """
import pathlib, sys, time
me, other, ready = (pathlib.Path(p) for p in sys.argv[1:])
me.touch()
while not other.exists():
    time.sleep(0.05)
ready.touch()
time.sleep(60)
"""


def _spec(name: str, tmp_path: Path, other: str, timeout: float = 30) -> Spec:
    argv = [sys.executable, "-c", WAIT_FOR_OTHER, str(tmp_path / name), str(tmp_path / other), str(tmp_path / f"{name}.ready")]
    return Spec(name, argv, {}, (tmp_path / f"{name}.ready").exists, timeout)


def test_processes_started_together_are_all_running_before_any_is_ready(tmp_path: Path) -> None:
    """Each becomes ready only once the other runs: one after the other, the first would never be."""
    supervisor = Supervisor(tmp_path / "logs")
    try:
        children = supervisor.start_together([_spec("a", tmp_path, "b"), _spec("b", tmp_path, "a")])
        assert [c.name for c in children] == ["a", "b"]
        assert all(c.process.poll() is None for c in children)
    finally:
        supervisor.stop_all()


def test_a_process_that_exits_is_named_and_the_others_can_be_stopped(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs")
    failing = Spec("broken", [sys.executable, "-c", "raise SystemExit(3)"], {}, lambda: False)
    try:
        with pytest.raises(StackError, match="broken exited with 3"):
            supervisor.start_together([_spec("a", tmp_path, "never"), failing])
    finally:
        supervisor.stop_all()
    assert supervisor.children == []


def test_one_that_never_gets_ready_times_out(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs")
    try:
        with pytest.raises(StackError, match="a not healthy after 1s"):
            supervisor.start_together([_spec("a", tmp_path, "never", timeout=1)])
    finally:
        supervisor.stop_all()
