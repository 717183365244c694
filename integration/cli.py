"""The `doctorai` command: `up` starts the local stack and the engine, `init` prepares real services,
`token` prints a bearer token, `clients` manages the FHIR API's clients.

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
        subscriptions_metrics=api.subscription_metrics_port,
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


def audit_verify(args: argparse.Namespace) -> int:
    """Walk the audit chain; exit 1 naming the first record that was changed, removed or reordered."""
    from audit.verify import verify
    from storage.db import make_engine, session_scope

    engine = make_engine(get_storage_settings().resolved_database_url())
    try:
        with session_scope(engine) as session:
            result = verify(session)
    finally:
        engine.dispose()
    if result.first_break is None:
        print(f"audit chain intact: {result.records} records")
        return 0
    print(f"audit chain broken at record {result.first_break.record_id}: {result.first_break.reason}")
    return 1


def token(args: argparse.Namespace) -> int:
    """Print a bearer token signed with this engine's secret."""
    from fhir_api.auth import issue_token
    from fhir_api.config import get_settings as get_api_settings

    print(issue_token(get_api_settings(), subject=args.subject, scopes=args.scope, roles=args.role, ttl_seconds=args.ttl))
    return 0


def clients(args: argparse.Namespace) -> int:
    """Register, list or remove API clients (SMART Backend Services) in the engine's database."""
    import secrets

    from fhir_api import clients as api_clients
    from storage.db import make_engine, session_scope

    engine = make_engine(get_storage_settings().resolved_database_url())
    try:
        with session_scope(engine) as session:
            if args.action == "list":
                for client in api_clients.all_clients(session):
                    print(f"{client.client_id}\t{client.auth_method}\t{client.scopes}\t{client.name}")
                return 0
            if args.action == "remove":
                if not api_clients.remove(session, args.client_id):
                    print(f"no client {args.client_id}", file=sys.stderr)
                    return 1
                return 0
            jwks = ""
            if args.jwks:
                jwks = Path(args.jwks).read_text()
            elif args.public_key:
                jwks = api_clients.jwks_from_public_key(Path(args.public_key).read_bytes())
            secret = "" if jwks else secrets.token_urlsafe(32)
            try:
                api_clients.register(
                    session, client_id=args.client_id, name=args.name, scopes=args.scope, jwks=jwks, secret=secret
                )
            except ValueError as exc:
                print(f"doctorai clients add: {exc}", file=sys.stderr)
                return 2
    finally:
        engine.dispose()
    if secret:
        # Shown once: only its hash is stored.
        print(f"client_id={args.client_id}\nclient_secret={secret}")
    else:
        print(f"client_id={args.client_id} (private_key_jwt)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the subcommand."""
    parser = argparse.ArgumentParser(prog="doctorai", description="DoctorAI integration engine")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the local stack and the engine (what `make run` does)")
    p_up.add_argument("--var-dir", default="", help="where data lives (default: DOCTORAI_VAR_DIR or ./var)")
    p_up.set_defaults(func=up)
    p_init = sub.add_parser("init", help="migrate the database, create the bucket and topics (production start-up)")
    p_init.set_defaults(func=init)
    p_audit = sub.add_parser("audit", help="audit trail tools")
    audit_sub = p_audit.add_subparsers(dest="audit_command", required=True)
    audit_sub.add_parser("verify", help="check the hash chain of the audit trail").set_defaults(func=audit_verify)
    p_token = sub.add_parser("token", help="print a bearer token for the local engine")
    p_token.add_argument("--subject", default="local-cli")
    p_token.add_argument("--scope", action="append", default=None, help="SMART scope, repeatable (default system/*.cruds)")
    p_token.add_argument("--role", action="append", default=None, help="role, repeatable (default admin)")
    p_token.add_argument("--ttl", type=int, default=None, help="lifetime in seconds (default DOCTORAI_TOKEN_TTL_SECONDS)")
    p_token.set_defaults(func=token)
    p_clients = sub.add_parser("clients", help="manage API clients of the FHIR API (SMART Backend Services)")
    clients_sub = p_clients.add_subparsers(dest="action", required=True)
    p_add = clients_sub.add_parser("add", help="register a client; without a key it gets a secret (printed once)")
    p_add.add_argument("client_id")
    p_add.add_argument("--name", default="")
    p_add.add_argument("--scope", action="append", required=True, help="SMART scope it may ask for, repeatable")
    keys = p_add.add_mutually_exclusive_group()
    keys.add_argument("--jwks", default="", help="JWK Set file of its public keys (private_key_jwt, RS384/ES384)")
    keys.add_argument("--public-key", default="", help="PEM public key file (private_key_jwt)")
    clients_sub.add_parser("list", help="list registered clients")
    p_remove = clients_sub.add_parser("remove", help="remove a client")
    p_remove.add_argument("client_id")
    p_clients.set_defaults(func=clients)
    args = parser.parse_args(argv)
    if args.command == "token":
        args.scope = args.scope or ["system/*.cruds"]
        args.role = args.role or ["admin"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
