"""The stack benchmarks/faults.py runs: a private PostgreSQL cluster (so it can be restarted), then the
local stack as `doctorai up` starts it, supervised as `doctorai up` supervises it (Supervisor.watch).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from doctorai.stack import (
    StackConfig,
    engine_env,
    free_ports,
    prepare_database,
    start_broker,
    start_engine,
    start_object_store,
)
from doctorai.supervisor import Child, RestartPolicy, Supervisor

# The builtin model the harness routes its CT studies to (the seeded rule "ct-and-mr-to-modality-check"):
# a light worker, so a fault run measures the engine, not a neural network.
MODEL = "modality-check"
# The engine's processes a crash may hit (the router and the relay are `integration`).
ENGINE = ("dicom", "mllp", "api", "integration", "results", "subscriptions", f"inference-{MODEL}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """A private PostgreSQL cluster in a temporary directory (initdb), on a free port, trust auth."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.port = _free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/doctorai"
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "doctorai")

    def _run(self, *argv: str) -> None:
        # PostgreSQL refuses to run as root: the cluster belongs to the postgres user then.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        # Not into a pipe: the server pg_ctl starts would hold it open, and we would wait for its end.
        subprocess.run([*prefix, *argv], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def start(self) -> None:
        """Start the cluster and wait until it takes connections."""
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -c max_connections=300 -k {self.root}"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "pg.log"), "-w", "start")

    def restart(self) -> None:
        """Restart it (fast: open connections are cut), as a failover or an upgrade would."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "pg.log"), "-m", "fast", "-w", "restart")

    def stop(self) -> None:
        """Stop it at once."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")


@dataclass
class Stack:
    """The running stack: its configuration, the supervisor (watched in a thread) and the database."""

    config: StackConfig
    supervisor: Supervisor
    postgres: Postgres
    env: dict[str, str]

    def child(self, name: str) -> Child:
        """The supervised process called `name`."""
        [found] = [c for c in self.supervisor.children if c.name == name]
        return found

    def restarts(self) -> int:
        """Restarts the supervisor counted, every process together."""
        total = 0.0
        for metric in self.supervisor.registry.collect():
            total += sum(s.value for s in metric.samples if s.name == "doctorai_process_restarts_total")
        return int(total)

    def back(self, name: str, old_pid: int) -> bool:
        """Whether `name` runs again (another PID) and answers its readiness check."""
        child = self.child(name)
        return child.process.pid != old_pid and child.process.poll() is None and child.spec.ready()

    def wait_back(self, name: str, old_pid: int, timeout: float = 120) -> float:
        """Seconds until `name` is back after its process `old_pid` died; raises TimeoutError."""
        began = time.monotonic()
        while not self.back(name, old_pid):
            if time.monotonic() - began > timeout:
                raise TimeoutError(f"{name} not back within {timeout:.0f}s")
            time.sleep(0.1)
        return time.monotonic() - began

    def process(self, name: str) -> psutil.Process:
        """The OS process of a supervised child (rclone is `s3`, Tansu `kafka`)."""
        return psutil.Process(self.child(name).process.pid)


@contextmanager
def running(work: Path | None = None, quiet_period: float = 1.0) -> Iterator[Stack]:
    """Start PostgreSQL, rclone, Tansu and the engine (one worker: MODEL), supervised; stop everything after."""
    own = work is None
    root = Path(tempfile.mkdtemp(prefix="doctorai-faults-")) if work is None else work
    root.mkdir(parents=True, exist_ok=True)
    # The cluster in a directory of its own under the system's temporary directory: the postgres user
    # must reach it, and a caller's directory (pytest's tmp_path) may be closed to others.
    cluster = Path(tempfile.mkdtemp(prefix="doctorai-faults-pg-"))
    cluster.chmod(0o755)
    postgres = Postgres(cluster / "postgres")
    config = StackConfig(
        var_dir=root / "var",
        ports=free_ports(),
        database_url=postgres.url,
        quiet_period_seconds=quiet_period,
        models=(MODEL,),
    )
    # The harness kills processes on purpose, so often that one may die again within a minute of its
    # restart several times: a crash loop of its own making, not the engine's; the backoff is the default.
    supervisor = Supervisor(config.var_dir / "logs", RestartPolicy(limit=1000))
    stop = threading.Event()
    watcher = threading.Thread(target=supervisor.watch, args=(stop,), kwargs={"interval": 0.2}, daemon=True)
    try:
        prepare_database(config)
        start_object_store(config, supervisor)
        start_broker(config, supervisor)
        start_engine(config, supervisor)
        env = engine_env(config)
        os.environ.update(env)
        watcher.start()
        yield Stack(config, supervisor, postgres, env)
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join(30)
        for child in supervisor.children:  # a paused one would not stop
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGCONT)
        supervisor.stop_all()
        postgres.stop()
        shutil.rmtree(cluster, ignore_errors=True)
        if own:
            shutil.rmtree(root, ignore_errors=True)
