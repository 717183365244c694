"""The supervisor starts processes that do not wait on each other together, says which one failed,
and restarts one that dies (with backoff, counted, up to a crash-loop limit)."""

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from doctorai.supervisor import RestartPolicy, Spec, StackError, Supervisor

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


def _restarts(supervisor: Supervisor, name: str) -> float:
    return supervisor.registry.get_sample_value("doctorai_process_restarts_total", {"process": name}) or 0.0


def _tend_until(supervisor: Supervisor, condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        supervisor.tend()
        time.sleep(0.02)


def test_a_child_that_dies_is_restarted_with_backoff_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 18: one crash no longer stops the stack; the restart is one log line and a counter."""
    supervisor = Supervisor(tmp_path / "logs", RestartPolicy(first_delay=0.05, max_delay=0.1, limit=5))
    sleeper = Spec("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], {}, lambda: True)
    other = Spec("other", [sys.executable, "-c", "import time; time.sleep(60)"], {}, lambda: True)
    try:
        supervisor.start_together([sleeper, other])
        first = supervisor.children[0].process.pid
        kept = supervisor.children[1].process.pid
        os.kill(first, signal.SIGKILL)
        with caplog.at_level(logging.INFO, logger="doctorai.stack"):
            _tend_until(supervisor, lambda: _restarts(supervisor, "sleeper") == 1)
        assert supervisor.children[0].process.pid != first
        assert supervisor.children[0].process.poll() is None
        assert supervisor.children[1].process.pid == kept
        [line] = [r.getMessage() for r in caplog.records if " died (" in r.getMessage()]
        assert line.startswith("sleeper died (signal SIGKILL); restart attempt 1 of 5 in a row in 0.05s")
    finally:
        supervisor.stop_all()


def test_a_crash_looping_child_stops_the_watch_with_its_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Restarts do not fix what kills a process at every start: after the limit the stack says so."""
    supervisor = Supervisor(tmp_path / "logs", RestartPolicy(first_delay=0.01, max_delay=0.04, limit=3))
    dying = Spec("dying", [sys.executable, "-c", "import time; time.sleep(0.3); raise SystemExit(3)"], {}, lambda: True)
    try:
        supervisor.start_together([dying])
        with caplog.at_level(logging.INFO, logger="doctorai.stack"), pytest.raises(StackError, match="dying is crash-looping: died 4 times in a row .exit 3."):
            supervisor.watch(threading.Event(), interval=0.02)
        delays = [r.getMessage().split(" in a row in ")[1].split("s;")[0] for r in caplog.records if " died (" in r.getMessage()]
        assert delays == ["0.01", "0.02", "0.04"]  # doubling from the first delay up to the maximum
        assert _restarts(supervisor, "dying") == 3
        assert any("crash-looping" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    finally:
        supervisor.stop_all()


def test_a_child_stopped_or_killed_on_purpose_is_not_restarted(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs", RestartPolicy(first_delay=0.01))
    spec = Spec("a", [sys.executable, "-c", "import time; time.sleep(60)"], {}, lambda: True)
    try:
        supervisor.start_together([spec])
        supervisor.kill("a")
        supervisor.tend()
        assert supervisor.children == [] and _restarts(supervisor, "a") == 0
    finally:
        supervisor.stop_all()
