"""The `doctorai` command: `up` starts the local stack and the engine, `init` prepares real services,
`token` prints a bearer token, `models` drives the model registry.

This is a composition root like a `__main__`: it may reach into every package.
"""

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from integration.config import get_settings as get_integration_settings
from integration.stack import (
    Ports,
    StackConfig,
    StackError,
    Supervisor,
    prepare_database,
    start_broker,
    start_engine,
    start_object_store,
)
from storage.config import get_settings as get_storage_settings

log = logging.getLogger("doctorai")


def _endpoints(config: StackConfig) -> str:
    p = config.ports
    database = config.storage_settings().resolved_database_url()
    return "\n".join(
        [
            "DoctorAI is up:",
            f"  DICOM C-STORE/C-ECHO   AE title DOCTORAI at 127.0.0.1:{p.dicom}",
            f"  FHIR R4                http://127.0.0.1:{p.http}/fhir  (token: .venv/bin/doctorai token)",
            f"  health / metrics       http://127.0.0.1:{p.http}/readyz  http://127.0.0.1:{p.http}/metrics",
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
    from inference.config import get_settings as get_inference_settings

    dicom, api = get_dicom_settings(), get_api_settings()
    return Ports(
        s3=int(get_storage_settings().s3_endpoint.rsplit(":", 1)[1]),
        kafka=int(get_integration_settings().kafka_bootstrap.rsplit(":", 1)[1]),
        dicom=dicom.dicom_port,
        http=api.http_port,
        dicom_metrics=dicom.dicom_metrics_port,
        integration_metrics=get_integration_settings().integration_metrics_port,
        results_metrics=api.results_metrics_port,
        inference_metrics=get_inference_settings().inference_metrics_port,
    )


def up(args: argparse.Namespace) -> int:
    """Start rclone S3, Tansu, the database schema and every engine process; run until Ctrl-C."""
    from dicom_listener.config import get_settings as get_dicom_settings

    storage = get_storage_settings()
    config = StackConfig(
        var_dir=Path(args.var_dir) if args.var_dir else storage.var_dir,
        ports=_configured_ports(),
        database_url=storage.database_url,
        quiet_period_seconds=get_dicom_settings().quiet_period_seconds,
    )
    supervisor = Supervisor(config.var_dir / "logs")
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        prepare_database(config)
        start_object_store(config, supervisor)
        start_broker(config, supervisor)
        start_engine(config, supervisor)
        print(_endpoints(config), flush=True)
        while not stopping:
            dead = supervisor.dead()
            if dead:
                names = ", ".join(f"{c.name} (exit {c.process.returncode}, log {c.log_path})" for c in dead)
                raise StackError(f"stopped unexpectedly: {names}")
            time.sleep(0.5)
        return 0
    except StackError as exc:
        print(f"doctorai up failed: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping...", flush=True)
        supervisor.stop_all()


def init(args: argparse.Namespace) -> int:
    """Prepare a deployment's real services: database schema, bucket and topics (idempotent)."""
    import asyncio

    from integration import kafka, topics
    from integration.stack import DEFAULT_MODELS
    from storage.db import migrate
    from storage.objects import make_object_store

    storage = get_storage_settings()
    migrate(storage.resolved_database_url())
    make_object_store(storage).ensure_bucket()
    names = [topics.STUDY_READY, topics.INFERENCE_RESULT, topics.DLQ]
    names += [topics.inference_request(m) for m in DEFAULT_MODELS]
    asyncio.run(kafka.ensure_topics(get_integration_settings(), names))
    print("database migrated, bucket and topics in place")
    return 0


def token(args: argparse.Namespace) -> int:
    """Print a bearer token signed with this engine's secret."""
    from fhir_api.auth import issue_token
    from fhir_api.config import get_settings as get_api_settings

    print(issue_token(get_api_settings(), subject=args.subject, scopes=args.scope, roles=args.role))
    return 0


def models(args: argparse.Namespace) -> int:
    """Add, list, activate, roll back and retire model packages (inference.registry)."""
    from inference import registry
    from inference.errors import InferenceError
    from inference.packages import lookup
    from storage.db import make_engine
    from storage.errors import StorageError
    from storage.objects import make_object_store

    storage = get_storage_settings()
    engine = make_engine(storage.resolved_database_url())
    try:
        if args.action == "add":
            store = make_object_store(storage)
            store.ensure_bucket()
            if args.builtin:
                sources = [lookup(name, storage.var_dir / "builtin-packages") for name in args.builtin]
            elif args.path:
                sources = [registry.read_package(Path(args.path))]
            else:
                print("doctorai models add: give PATH or --builtin NAME", file=sys.stderr)
                return 2
            for manifest, artifact in sources:
                registry.upload(engine, store, manifest, artifact)
                if args.activate:
                    registry.activate(engine, manifest.name, manifest.version)
                elif args.ensure_active:
                    registry.ensure_active(engine, manifest.name, manifest.version)
                print(f"{manifest.name} {manifest.version} registered")
        elif args.action == "list":
            for row in registry.registered(engine, args.name):
                activated = f"{row.activated_at:%Y-%m-%d %H:%M:%S}" if row.activated_at else "-"
                print(f"{row.name:24} {row.version:16} {row.framework:12} {row.status:9} activated {activated}")
        elif args.action == "activate":
            registry.activate(engine, args.name, args.version)
            print(f"{args.name} {args.version} active")
        elif args.action == "rollback":
            print(f"{args.name} {registry.rollback(engine, args.name)} active")
        elif args.action == "retire":
            registry.retire(engine, args.name, args.version)
            print(f"{args.name} {args.version} retired")
        return 0
    except (InferenceError, StorageError) as exc:
        print(f"doctorai models {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def _models_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p_models = sub.add_parser("models", help="the model registry: add, list, activate, rollback, retire")
    p_models.set_defaults(func=models)
    actions = p_models.add_subparsers(dest="action", required=True)
    p_add = actions.add_parser("add", help="upload a package directory (manifest.json + artifact) or a builtin")
    p_add.add_argument("path", nargs="?", default="", help="package directory")
    p_add.add_argument("--builtin", action="append", default=[], help="builtin package name, repeatable")
    p_add.add_argument("--activate", action="store_true", help="make the added version the active one")
    p_add.add_argument(
        "--ensure-active", action="store_true", help="activate it unless another version is active (idempotent)"
    )
    p_list = actions.add_parser("list", help="registered versions and their status")
    p_list.add_argument("name", nargs="?", default="")
    for action, text in (("activate", "make VERSION the one new jobs use"), ("retire", "take VERSION out of use")):
        p = actions.add_parser(action, help=text)
        p.add_argument("name")
        p.add_argument("version")
    p_rollback = actions.add_parser("rollback", help="activate the version that was active before")
    p_rollback.add_argument("name")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the subcommand."""
    parser = argparse.ArgumentParser(prog="doctorai", description="DoctorAI integration engine")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the local stack and the engine (what `make run` does)")
    p_up.add_argument("--var-dir", default="", help="where data lives (default: DOCTORAI_VAR_DIR or ./var)")
    p_up.set_defaults(func=up)
    p_init = sub.add_parser("init", help="migrate the database, create the bucket and topics (production start-up)")
    p_init.set_defaults(func=init)
    p_token = sub.add_parser("token", help="print a bearer token for the local engine")
    p_token.add_argument("--subject", default="local-cli")
    p_token.add_argument("--scope", action="append", default=None, help="SMART scope, repeatable (default system/*.cruds)")
    p_token.add_argument("--role", action="append", default=None, help="role, repeatable (default admin)")
    p_token.set_defaults(func=token)
    _models_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "token":
        args.scope = args.scope or ["system/*.cruds"]
        args.role = args.role or ["admin"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
