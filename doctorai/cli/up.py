"""`doctorai up` starts the local stack and the engine; `doctorai init` prepares a deployment's real services."""

import argparse
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from doctorai.stack import (
    Ports,
    StackConfig,
    prepare_database,
    start_broker,
    start_engine,
    start_object_store,
)
from doctorai.supervisor import StackError, Supervisor
from integration.config import get_settings as get_integration_settings
from storage.config import get_settings as get_storage_settings


def endpoints(config: StackConfig, workers: Mapping[str, int]) -> str:
    """What `doctorai up` prints once everything runs: where each service listens, which inference
    workers run (with their metrics ports), where data and logs are."""
    p = config.ports
    database = config.storage_settings().resolved_database_url()
    running = ", ".join(f"{model} (metrics :{port})" for model, port in workers.items())
    return "\n".join(
        [
            "DoctorAI is up:",
            f"  DICOM C-STORE/C-ECHO   AE title DOCTORAI at 127.0.0.1:{p.dicom}",
            f"  FHIR R4                http://127.0.0.1:{p.http}/fhir  (token: .venv/bin/doctorai token)",
            f"  HL7 v2 (MLLP)          127.0.0.1:{p.mllp}",
            f"  inference workers      {running or 'none: no model has an active version (doctorai models list)'}",
            f"  health / metrics       http://127.0.0.1:{p.http}/readyz  http://127.0.0.1:{p.http}/metrics",
            f"  restarts (supervisor)  http://127.0.0.1:{p.supervisor_metrics}/metrics",
            f"  object store (S3)      http://127.0.0.1:{p.s3}  over {config.var_dir / 'objects'}",
            f"  Kafka (Tansu)          127.0.0.1:{p.kafka}",
            f"  database               {database.split('@')[-1]}",
            f"  logs                   {config.var_dir / 'logs'}",
            "Ctrl-C stops everything; data stays under the var directory.",
        ]
    )


def _configured_ports() -> Ports:
    """The ports the DOCTORAI_* settings name (their defaults are the documented ones)."""
    from dicom_listener.config import get_settings as get_dicom_settings
    from fhir_api.config import get_settings as get_api_settings
    from hl7_listener.config import get_settings as get_mllp_settings
    from inference.config import get_settings as get_inference_settings
    from results.config import get_settings as get_results_settings

    dicom, api = get_dicom_settings(), get_api_settings()
    return Ports(
        s3=int(get_storage_settings().s3_endpoint.rsplit(":", 1)[1]),
        kafka=int(get_integration_settings().kafka_bootstrap.rsplit(":", 1)[1]),
        dicom=dicom.dicom_port,
        http=api.http_port,
        dicom_metrics=dicom.dicom_metrics_port,
        integration_metrics=get_integration_settings().integration_metrics_port,
        results_metrics=get_results_settings().results_metrics_port,
        subscriptions_metrics=api.subscription_metrics_port,
        inference_metrics=get_inference_settings().inference_metrics_port,
        mllp=get_mllp_settings().mllp_port,
        mllp_metrics=get_mllp_settings().mllp_metrics_port,
        supervisor_metrics=get_integration_settings().supervisor_metrics_port,
    )


def up(args: argparse.Namespace) -> int:
    """Start rclone S3, Tansu, the database schema and every engine process; restart one that dies
    (doctorai.supervisor.RestartPolicy); run until Ctrl-C, or until a process is crash-looping (exit 1)."""
    from dicom_listener.config import get_settings as get_dicom_settings
    from integration import health

    storage = get_storage_settings()
    config = StackConfig(
        var_dir=Path(args.var_dir) if args.var_dir else storage.var_dir,
        ports=_configured_ports(),
        database_url=storage.database_url,
        quiet_period_seconds=get_dicom_settings().quiet_period_seconds,
    )
    supervisor = Supervisor(config.var_dir / "logs")
    stopping = threading.Event()

    def _stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    # The supervisor's own /metrics (its restart counts): the children's ports are theirs, and the
    # API's /metrics is one child among them (it may be the one restarting).
    server = None
    if config.ports.supervisor_metrics:
        host, ready = get_integration_settings().metrics_host, health.Readiness({})
        server = health.serve(host, config.ports.supervisor_metrics, readiness=ready, registry=supervisor.registry)
    try:
        prepare_database(config)
        start_object_store(config, supervisor)
        start_broker(config, supervisor)
        workers = start_engine(config, supervisor)
        print(endpoints(config, workers), flush=True)
        supervisor.watch(stopping)
        return 0
    except StackError as exc:
        print(f"doctorai up failed: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping...", flush=True)
        supervisor.stop_all()
        health.stop(server)


def init(args: argparse.Namespace) -> int:
    """Prepare a deployment's real services: database schema, bucket and topics (idempotent)."""
    import asyncio

    from doctorai.stack import DEFAULT_MODELS
    from integration import kafka, topics
    from storage.db import migrate
    from storage.objects import make_object_store

    storage = get_storage_settings()
    migrate(storage.resolved_database_url())
    make_object_store(storage).ensure_bucket()
    names = [topics.STUDY_READY, topics.INFERENCE_RESULT, topics.HL7_RECEIVED, topics.DLQ]
    names += [topics.inference_request(m) for m in DEFAULT_MODELS]
    asyncio.run(kafka.ensure_topics(get_integration_settings(), names))
    print("database migrated, bucket and topics in place")
    return 0


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """`doctorai up` and `doctorai init`."""
    p_up = sub.add_parser("up", help="start the local stack and the engine (what `make run` does)")
    p_up.add_argument("--var-dir", default="", help="where data lives (default: DOCTORAI_VAR_DIR or ./var)")
    p_up.set_defaults(func=up)
    p_init = sub.add_parser("init", help="migrate the database, create the bucket and topics (production start-up)")
    p_init.set_defaults(func=init)
