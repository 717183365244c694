"""The local stack's supervisor: starts processes, waits for each to be ready, restarts one that dies
(with backoff, counted in metrics), and stops them in reverse order (issue 18: one crash took the
whole engine down)."""

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from integration.backoff import backoff

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """A part of the local stack did not start or died."""


@dataclass(frozen=True)
class Spec:
    """A process to start: its command, environment, and how to tell it is ready."""

    name: str
    argv: list[str]
    env: Mapping[str, str]
    ready: Callable[[], bool]
    timeout: float = 60.0
    cwd: Path | None = None


@dataclass(frozen=True)
class RestartPolicy:
    """How the supervisor restarts a child that died: after a backoff (integration.backoff, from
    `first_delay` doubling to `max_delay`), at most `limit` times in a row; a child that stayed up
    `stable_seconds` starts its count again. A child that dies more often is crash-looping: a
    restart does not fix what kills it, so the stack stops and says so (as systemd's start limit)."""

    first_delay: float = 1.0
    max_delay: float = 30.0
    limit: int = 5
    stable_seconds: float = 60.0


@dataclass
class Child:
    """One supervised process: its current run, and what the supervisor needs to run it again."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    spec: Spec
    started_at: float = field(default_factory=time.monotonic)
    # Deaths in a row, each within the policy's stable period of its start.
    failures: int = 0
    # When a dead child is started again (monotonic), and whether a restarted one is not ready yet.
    restart_at: float | None = None
    coming_back: bool = False


def exit_reason(returncode: int) -> str:
    """'exit 3' or 'signal SIGKILL': how a child ended (Popen gives a signal as a negative code)."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"


class Supervisor:
    """Starts processes, waits for each to be healthy, restarts one that dies (`tend`, `watch`), and
    stops them in reverse order.

    Restarts are counted in `registry` as doctorai_process_restarts_total{process}; `doctorai up`
    serves that registry on its own metrics port (Ports.supervisor_metrics).
    """

    def __init__(self, log_dir: Path, policy: RestartPolicy = RestartPolicy()) -> None:
        self.log_dir = log_dir
        self.policy = policy
        self.children: list[Child] = []
        self.registry = CollectorRegistry()
        self.restarts = Counter(
            "doctorai_process_restarts",
            "Engine processes the supervisor restarted after they died",
            ["process"],
            registry=self.registry,
        )
        self._lock = threading.Lock()
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        env: Mapping[str, str],
        ready: Callable[[], bool],
        timeout: float = 60.0,
        cwd: Path | None = None,
    ) -> Child:
        """Start `argv` and return once `ready()` is true; raise StackError if it dies or times out."""
        [child] = self.start_together([Spec(name, argv, env, ready, timeout, cwd)])
        return child

    def _spawn(self, spec: Spec) -> subprocess.Popen[bytes]:
        log_path = self.log_dir / f"{spec.name}.log"
        with log_path.open("ab") as out:
            # A session of its own: Ctrl-C reaches only `doctorai up`, which stops children in order;
            # and what a child started can be found by its process group when it dies.
            return subprocess.Popen(
                spec.argv,
                env={**os.environ, **spec.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=spec.cwd,
                start_new_session=True,
            )

    def start_together(self, specs: Sequence[Spec]) -> list[Child]:
        """Start every process at once, and return once each is ready; raise StackError if one dies or times out.

        For processes that do not wait on each other: their start-ups (imports, Kafka group
        joins, model loads) overlap instead of adding up.
        """
        started = []
        for spec in specs:
            child = Child(spec.name, self._spawn(spec), self.log_dir / f"{spec.name}.log", spec)
            with self._lock:
                self.children.append(child)
            started.append((spec, child, time.monotonic() + spec.timeout))
        waiting = list(started)
        while waiting:
            for spec, child, deadline in list(waiting):
                if spec.ready():
                    log.info("%s is up (pid %d)", spec.name, child.process.pid)
                    waiting.remove((spec, child, deadline))
                elif child.process.poll() is not None:
                    raise StackError(f"{spec.name} exited with {child.process.returncode}; see {child.log_path}")
                elif time.monotonic() > deadline:
                    raise StackError(f"{spec.name} not healthy after {spec.timeout:.0f}s; see {child.log_path}")
            if waiting:
                time.sleep(0.1)
        return [child for _, child, _ in started]

    def tend(self) -> None:
        """One round of care: schedule a restart of each child that died (one log line each: name,
        how it ended, the attempt, the delay), start those whose delay is over, and log those that
        are back. Raises StackError when a child is crash-looping (RestartPolicy)."""
        now = time.monotonic()
        with self._lock:
            children = list(self.children)
        for child in children:
            if child.restart_at is None and child.process.poll() is not None:
                self._died(child, now)
            elif child.restart_at is not None and now >= child.restart_at:
                with self._lock:
                    if child not in self.children:  # stopped meanwhile
                        continue
                    child.process = self._spawn(child.spec)
                child.started_at, child.restart_at, child.coming_back = now, None, True
                self.restarts.labels(process=child.name).inc()
                log.info("%s restarted (pid %d)", child.name, child.process.pid)
            elif child.coming_back and child.process.poll() is None and child.spec.ready():
                child.coming_back = False
                log.info("%s is back up (pid %d)", child.name, child.process.pid)

    def _died(self, child: Child, now: float) -> None:
        _reap_group(child)
        how = exit_reason(child.process.returncode)
        if now - child.started_at >= self.policy.stable_seconds:
            child.failures = 0
        child.failures += 1
        if child.failures > self.policy.limit:
            log.error(
                "%s is crash-looping (%s; died %d times in a row, each within %.0fs of its start): not restarting it",
                child.name, how, child.failures, self.policy.stable_seconds,
            )
            raise StackError(
                f"{child.name} is crash-looping: died {child.failures} times in a row ({how}); see {child.log_path}"
            )
        delay = backoff(child.failures, first=self.policy.first_delay, maximum=self.policy.max_delay).total_seconds()
        child.restart_at = now + delay
        log.warning(
            "%s died (%s); restart attempt %d of %d in a row in %.2fs; see %s",
            child.name, how, child.failures, self.policy.limit, delay, child.log_path,
        )

    def watch(self, stop: threading.Event, interval: float = 0.5) -> None:
        """Tend the children until `stop` is set; raises StackError when one is crash-looping."""
        while not stop.wait(interval):
            self.tend()

    def stop(self, name: str, timeout: float = 20.0) -> None:
        """Stop one child with SIGTERM (SIGKILL after `timeout`); it is not restarted."""
        for child in self._take(name):
            _terminate(child, timeout)

    def kill(self, name: str) -> None:
        """Kill one child at once (SIGKILL), as a crash would; it is not restarted."""
        for child in self._take(name):
            child.process.kill()
            child.process.wait()

    def _take(self, name: str) -> list[Child]:
        with self._lock:
            taken = [c for c in self.children if c.name == name]
            self.children = [c for c in self.children if c.name != name]
        return taken

    def stop_all(self) -> None:
        """Stop every child, last started first."""
        with self._lock:
            children, self.children = self.children, []
        for child in reversed(children):
            _terminate(child, 20.0)

    def stop_together(self) -> None:
        """Stop every child at once: for processes that do not depend on each other (the engine's
        processes, while the broker and object store they use stay up)."""
        with self._lock:
            children, self.children = self.children, []
        for child in children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in children:
            _terminate(child, 20.0)

    def dead(self) -> list[Child]:
        """Children that exited on their own (and are not restarted yet)."""
        return [c for c in self.children if c.process.poll() is not None]


def _reap_group(child: Child) -> None:
    """Kill what a dead child left behind in its process group (an inference worker's model runners),
    so that its restart does not run beside orphans."""
    try:
        os.killpg(child.process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _terminate(child: Child, timeout: float) -> None:
    if child.process.poll() is None:
        child.process.send_signal(signal.SIGTERM)
        try:
            child.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing it", child.name, timeout)
            child.process.kill()
            child.process.wait()
