"""Loaded models: one runner process per model version, and an LRU cache of them under a memory budget.

Each loaded version runs in its own child process (inference.runner_child), so that a job past its
timeout is abandoned by killing the process rather than left running in a thread, the memory a
model really uses can be measured (its runner's resident set), and a crash in native code fails
only that model's jobs.
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import psutil
from numpy.typing import NDArray

from inference import runner_child, text
from inference.adapters import Batch
from inference.errors import InferenceError, InferenceTimeout, LoadTimeout, ModelCrashed, ModelFailed
from integration.models.manifest import Manifest

log = logging.getLogger(__name__)

# A fresh interpreter per runner (forking a worker that runs an event loop and Kafka client threads
# could copy held locks into the child), started by subprocess so that its environment is its own
# (runner_child.environment) rather than a copy of the worker's secrets.
_RUNNER = [sys.executable, "-m", "inference.runner_child"]


def _exit_status(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by signal {-code} ({signal.strsignal(-code)})"
    return f"exit code {code}"


class LoadedModel:
    """A model package version, served by a runner process started on first use and kept until unloaded.

    One request at a time goes through the runner's pipe. A runner that was killed (timeout,
    memory budget) or died is started again by the next call.
    """

    def __init__(self, manifest: Manifest, artifact: Path, adapter: str, *, load_timeout: float | None = None) -> None:
        """`adapter` names the adapter module (an inference.adapters.Adapter), imported only in the runner;
        a runner that has not loaded the model after `load_timeout` seconds (None: no limit) is killed."""
        self.manifest = manifest
        self._artifact = artifact
        self._adapter = adapter
        self._load_timeout = load_timeout
        self._anchors: NDArray[np.float32] | None = None
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None

    def load(self) -> None:
        """Start the runner and load the model in it, unless it runs already (blocking: call it from a thread).

        A runner that dies while loading raises ModelCrashed, one past the load timeout is killed and
        raises LoadTimeout (both retriable); an error of the adapter is raised as it raised it.
        """
        with self._lock:
            self._running()

    def unload(self) -> None:
        """Kill the runner now; a request in flight fails with ModelCrashed, the next use starts a new one."""
        process = self._process
        if process is None:
            return
        # Killed before taking the lock: a request in flight holds it and sees the pipe close.
        process.kill()
        with self._lock:
            if self._process is process:
                self._reap()

    @property
    def is_loaded(self) -> bool:
        """Whether the runner is running now."""
        process = self._process
        return process is not None and process.poll() is None

    @property
    def pid(self) -> int | None:
        """The runner's process id while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def resident_bytes(self) -> int:
        """The runner's resident memory now (0 when it is not running): what the memory budget counts."""
        pid = self.pid
        if pid is None:
            return 0
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.NoSuchProcess:
            return 0

    def predict(self, batch: Batch, *, timeout: float | None = None) -> NDArray[np.float32]:
        """Raw model outputs for a batch (blocking: call it from a thread).

        Past `timeout` seconds the runner is killed and InferenceTimeout raised; a runner that dies
        raises ModelCrashed (retriable); an error of the model itself raises ModelFailed (permanent).
        """
        with self._lock:
            conn = self._running()
            try:
                conn.send_bytes(runner_child.encode_batch(batch))
            except OSError:  # the runner died since its last answer
                raise self._crashed(f"before a batch of {len(batch)}") from None
            if not conn.poll(timeout):
                self._kill()
                raise InferenceTimeout(
                    f"{self.manifest.name} {self.manifest.version} took over {timeout}s for {len(batch)} inputs"
                )
            outputs = self._answer(conn, f"running a batch of {len(batch)}")
        if not isinstance(outputs, np.ndarray):
            raise InferenceError(f"the model's runner answered {type(outputs).__name__}, not an array")
        return outputs

    def anchors(self, *, timeout: float | None = None) -> NDArray[np.float32]:
        """Text models: the embeddings of the outputs' descriptions and negations, computed once."""
        if self._anchors is None:
            self._anchors = self.predict(text.anchor_texts(self.manifest), timeout=timeout)
        return self._anchors

    def _running(self) -> Connection:
        """The pipe to a running runner, starting one (and loading the model) if needed; lock held."""
        if self._conn is not None and self.is_loaded:
            return self._conn
        self._reap()
        started = time.perf_counter()
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(
                [*_RUNNER, self._adapter, str(self._artifact), str(os.getpid()), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=runner_child.environment(os.environ, sys.path),
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()  # the runner holds the only other end, so its death reads as end-of-file here
        conn = Connection(ours.detach())
        self._process, self._conn = process, conn
        # A large model on a busy machine can take minutes to load, so the load timeout is generous
        # and separate from the batch timeout; a runner that dies while loading ends the wait sooner.
        try:
            if not conn.poll(self._load_timeout):
                raise LoadTimeout(
                    f"the runner (pid {process.pid}) of {self.manifest.name} {self.manifest.version} was still "
                    f"loading the model after {self._load_timeout}s and was killed"
                )
            self._answer(conn, "loading")
        except Exception:  # raised again once the runner is gone
            self._kill()  # a runner whose load failed is exiting: gone before this raises
            raise
        log.info(
            "loaded %s %s from %s in %.1fs (runner pid %d, %.0f MB resident)",
            self.manifest.name,
            self.manifest.version,
            self._artifact.name,
            time.perf_counter() - started,
            process.pid,
            self.resident_bytes / 1e6,
        )
        return conn

    def _answer(self, conn: Connection, doing: str) -> object:
        """The runner's answer: its value, or its error raised here; lock held."""
        try:
            frame = conn.recv_bytes()
        except (EOFError, OSError):
            raise self._crashed(doing) from None
        try:
            return runner_child.decode_answer(frame)
        except runner_child.RunnerError as exc:
            ours = exc.as_inference_error()
            if ours is not None:
                raise ours from None
            # Anything else the model raised (a ValueError from torch, say) fails this job for good:
            # the worker records an error result and dead-letters the request, as for other
            # permanent errors, instead of leaving the job queued with nobody answering it.
            raise ModelFailed(f"{self.manifest.name} {self.manifest.version}: {exc}") from None
        except ValueError as exc:  # not an .npy array without objects
            raise ModelFailed(f"{self.manifest.name} {self.manifest.version}: the runner's answer is unreadable: {exc}") from None

    def _crashed(self, doing: str) -> ModelCrashed:
        # The pid lets an operator find the runner in the kernel's log (the out-of-memory killer names it).
        pid = self._process.pid if self._process is not None else None
        status = _exit_status(self._reap())
        return ModelCrashed(
            f"the runner (pid {pid}) of {self.manifest.name} {self.manifest.version} died {doing} ({status})"
        )

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
        self._reap()

    def _reap(self) -> int | None:
        """Forget the runner once it has exited (killing it if it lingers); its exit code; lock held."""
        process, conn = self._process, self._conn
        self._process, self._conn = None, None
        if conn is not None:
            conn.close()
        if process is None:
            return None
        # A runner ends as soon as its pipe closes, unless a framework's non-daemon thread holds its exit.
        try:
            return process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()


class ModelCache:
    """Model versions by (name, version); their runners are stopped, least recently used first, when
    their resident memory together exceeds the budget.

    The model just asked for always stays, even alone over budget: a worker must serve it.
    """

    def __init__(self, loader: Callable[[str, str], LoadedModel], *, budget_bytes: float) -> None:
        self._loader = loader
        self._budget = budget_bytes
        # Every version asked for, least recently used first, running or not: a version whose
        # runner was stopped keeps its manifest and text anchors, and whichever use restarts its
        # runner (a job prepared before the eviction) restarts one this cache counts and stops.
        self._models: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, version: str) -> LoadedModel:
        """The loaded model of this version, starting its runner (and stopping others) if needed; blocking."""
        key = (name, version)
        with self._lock:
            model = self._model(key)
            self._models.move_to_end(key)
            model.load()
            self._evict(keep=key)
            return model

    def model(self, name: str, version: str) -> LoadedModel:
        """The model of this version without starting its runner (its manifest, when its load failed); blocking."""
        with self._lock:
            return self._model((name, version))

    def _model(self, key: tuple[str, str]) -> LoadedModel:
        model = self._models.get(key)
        if model is None:
            model = self._loader(*key)
            self._models[key] = model
        return model

    def _evict(self, *, keep: tuple[str, str]) -> None:
        resident = {key: m.resident_bytes for key, m in self._models.items() if m.is_loaded}
        total = sum(resident.values())
        for key, size in resident.items():
            if total <= self._budget:
                return
            if key == keep:
                continue
            self._models[key].unload()
            total -= size
            log.info(
                "stopped the runner of %s %s (%.0f MB resident; memory budget %.0f MB)",
                key[0], key[1], size / 1e6, self._budget / 1e6,
            )

    def loaded(self) -> list[tuple[str, str]]:
        """(name, version) of every model whose runner runs, least recently used first."""
        with self._lock:
            return [key for key, m in self._models.items() if m.is_loaded]

    def resident_bytes(self) -> int:
        """The resident memory of every running runner together."""
        with self._lock:
            return sum(m.resident_bytes for m in self._models.values())

    def close(self) -> None:
        """Stop every runner (the worker is stopping)."""
        with self._lock:
            for model in self._models.values():
                model.unload()
