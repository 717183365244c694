"""The `doctorai` command: `up` starts the local stack and the engine, `init` prepares real services,
`token` prints a bearer token, `clients` manages the FHIR API's clients,
`destinations`/`deliveries`/`hl7` show and configure HL7 v2 traffic, `peers` manages the DICOM peers
allowed to send, `models` drives the model registry, `studies` releases or reprocesses a study.

This is a composition root like a `__main__`: it may reach into every package.
"""

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from integration.config import get_settings as get_integration_settings
from integration.logs import setup_logging
from doctorai.stack import (
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

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger("doctorai")


def _endpoints(config: StackConfig) -> str:
    p = config.ports
    database = config.storage_settings().resolved_database_url()
    return "\n".join(
        [
            "DoctorAI is up:",
            f"  DICOM C-STORE/C-ECHO   AE title DOCTORAI at 127.0.0.1:{p.dicom}",
            f"  FHIR R4                http://127.0.0.1:{p.http}/fhir  (token: .venv/bin/doctorai token)",
            f"  HL7 v2 (MLLP)          127.0.0.1:{p.mllp}",
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
    from doctorai.stack import DEFAULT_MODELS
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


def _in_database(work: "Callable[[Session], int]") -> int:
    from storage.db import make_engine, session_scope

    engine = make_engine(get_storage_settings().resolved_database_url())
    try:
        with session_scope(engine) as session:
            return work(session)
    finally:
        engine.dispose()


def destinations_add_mllp(args: argparse.Namespace) -> int:
    """Configure an MLLP destination that every new report is sent to as ORU^R01 (issue 4)."""
    from storage.deliveries import DestinationExists, add_destination

    def work(session: "Session") -> int:
        try:
            row = add_destination(session, name=args.name, kind="mllp", host=args.host, port=args.port, tls=args.tls)
        except DestinationExists:
            print(f"a destination named {args.name} exists already", file=sys.stderr)
            return 1
        print(f"destination {row.id} {row.name}: mllp://{row.host}:{row.port}{' (TLS)' if row.tls else ''}")
        return 0

    return _in_database(work)


def destinations_list(args: argparse.Namespace) -> int:
    """Print the configured destinations and their delivery counts."""
    from storage.deliveries import deliveries, destinations

    def work(session: "Session") -> int:
        rows = deliveries(session)
        for d in destinations(session):
            counts = {s: sum(1 for r in rows if r.destination_id == d.id and r.status == s) for s in ("pending", "sent", "dead")}
            state = "enabled" if d.enabled else "disabled"
            print(f"{d.id}\t{d.name}\t{d.kind}://{d.host}:{d.port}\t{state}\t{counts}")
        return 0

    return _in_database(work)


def deliveries_list(args: argparse.Namespace) -> int:
    """Print outbound deliveries (optionally of one status) with attempts and last error."""
    from storage.deliveries import deliveries

    def work(session: "Session") -> int:
        for r in deliveries(session, status=args.status):
            print(f"{r.id}\t{r.status}\tdestination {r.destination_id}\t{r.subject}\tattempts {r.attempts}\t{r.ack_code}\t{r.last_error}")
        return 0

    return _in_database(work)


def hl7_unmapped(args: argparse.Namespace) -> int:
    """Print, as JSON, the fields of a received HL7 message that the FHIR mapping did not use."""
    import json

    from storage.hl7_messages import unmapped_report

    def work(session: "Session") -> int:
        try:
            report = unmapped_report(session, message_id=args.message_id)
        except KeyError:
            print(f"no HL7 message {args.message_id}", file=sys.stderr)
            return 1
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0

    return _in_database(work)


def token(args: argparse.Namespace) -> int:
    """Print a bearer token signed with this engine's secret."""
    from fhir_api.auth.tokens import issue_token
    from fhir_api.config import get_settings as get_api_settings

    print(issue_token(get_api_settings(), subject=args.subject, scopes=args.scope, roles=args.role, ttl_seconds=args.ttl))
    return 0


def clients(args: argparse.Namespace) -> int:
    """Register, list or remove API clients (SMART Backend Services) in the engine's database."""
    import secrets

    from fhir_api.auth import clients as api_clients
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


def peers(args: argparse.Namespace) -> int:
    """List, add (or change) and remove DICOM peers: calling AE titles with their own settings."""
    from dataclasses import asdict

    from storage.db import make_engine, session_scope
    from storage.peers import Peer, all_peers, delete_peer, save_peer

    engine = make_engine(get_storage_settings().resolved_database_url())
    try:
        with session_scope(engine) as session:
            if args.action == "add":
                save_peer(
                    session,
                    Peer(
                        ae_title=args.ae_title,
                        host=args.host,
                        quiet_period_seconds=args.quiet_period,
                        max_associations=args.max_associations,
                        max_pdu=args.max_pdu,
                        dimse_timeout=args.dimse_timeout,
                        network_timeout=args.network_timeout,
                        duplicate_policy=args.duplicate_policy,
                    ),
                )
            elif args.action == "remove":
                if not delete_peer(session, ae_title=args.ae_title):
                    print(f"no peer {args.ae_title}", file=sys.stderr)
                    return 1
            else:
                for peer in all_peers(session):
                    print(" ".join(f"{k}={v}" for k, v in asdict(peer).items() if v not in (None, "")))
    finally:
        engine.dispose()
    return 0


def models(args: argparse.Namespace) -> int:
    """Add, list, activate, roll back and retire model packages (integration.model_packages, inference.registry)."""
    from inference import registry
    from inference.errors import InferenceError
    from inference.packages import lookup
    from integration import model_packages
    from integration.errors import PipelineError
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
                sources = [model_packages.read_package(Path(args.path))]
            else:
                print("doctorai models add: give PATH or --builtin NAME", file=sys.stderr)
                return 2
            for manifest, artifact in sources:
                model_packages.upload(engine, store, manifest, artifact)
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
    except (InferenceError, PipelineError, StorageError) as exc:
        print(f"doctorai models {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def studies(args: argparse.Namespace) -> int:
    """Release a held study, or route a stored study again, at a new revision (as the admin API does)."""
    from integration.errors import PipelineError
    from integration.studies import release_study, reprocess_study
    from storage.db import make_engine

    engine = make_engine(get_storage_settings().resolved_database_url())
    act = release_study if args.action == "release" else reprocess_study
    try:
        ready = act(engine, study_uid=args.study_uid, who=args.who)
    except PipelineError as exc:
        print(f"doctorai studies {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"{ready.study_uid} revision {ready.revision} announced ({ready.reason})")
    return 0


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
    p_audit = sub.add_parser("audit", help="audit trail tools")
    audit_sub = p_audit.add_subparsers(dest="audit_command", required=True)
    audit_sub.add_parser("verify", help="check the hash chain of the audit trail").set_defaults(func=audit_verify)
    p_dest = sub.add_parser("destinations", help="where results are sent")
    dest_sub = p_dest.add_subparsers(dest="destinations_command", required=True)
    p_add = dest_sub.add_parser("add-mllp", help="send every new report as ORU^R01 to an MLLP receiver")
    p_add.add_argument("name")
    p_add.add_argument("host")
    p_add.add_argument("port", type=int)
    p_add.add_argument("--tls", action="store_true", help="connect with TLS")
    p_add.set_defaults(func=destinations_add_mllp)
    dest_sub.add_parser("list", help="configured destinations").set_defaults(func=destinations_list)
    p_deliveries = sub.add_parser("deliveries", help="outbound deliveries with attempts and last error")
    p_deliveries.add_argument("--status", choices=["pending", "sent", "dead"], default=None)
    p_deliveries.set_defaults(func=deliveries_list)
    p_hl7 = sub.add_parser("hl7", help="HL7 v2 message tools")
    hl7_sub = p_hl7.add_subparsers(dest="hl7_command", required=True)
    p_unmapped = hl7_sub.add_parser("unmapped", help="fields of a received message the FHIR mapping did not use")
    p_unmapped.add_argument("message_id")
    p_unmapped.set_defaults(func=hl7_unmapped)
    p_token = sub.add_parser("token", help="print a bearer token for the local engine")
    p_token.add_argument("--subject", default="local-cli")
    p_token.add_argument("--scope", action="append", default=None, help="SMART scope, repeatable (default system/*.cruds)")
    p_token.add_argument(
        "--role",
        action="append",
        choices=["admin", "operator", "auditor"],
        default=None,
        help="role, repeatable: admin (admin API), operator (admin API read-only), auditor (default admin)",
    )
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
    p_peers = sub.add_parser("peers", help="DICOM peers allowed to send, with per-peer settings")
    peer_actions = p_peers.add_subparsers(dest="action", required=True)
    peer_actions.add_parser("list", help="print every peer")
    p_remove = peer_actions.add_parser("remove", help="remove a peer")
    p_remove.add_argument("ae_title")
    p_add = peer_actions.add_parser("add", help="add a peer, or replace its settings")
    p_add.add_argument("ae_title")
    p_add.add_argument("--host", default="", help="the only host or address it may call from")
    p_add.add_argument("--quiet-period", type=float, default=None, help="seconds; default DOCTORAI_QUIET_PERIOD_SECONDS")
    p_add.add_argument("--max-associations", type=int, default=None)
    p_add.add_argument("--max-pdu", type=int, default=None)
    p_add.add_argument("--dimse-timeout", type=float, default=None)
    p_add.add_argument("--network-timeout", type=float, default=None)
    p_add.add_argument("--duplicate-policy", choices=["keep-first", "keep-last", "reject"], default=None)
    p_peers.set_defaults(func=peers)
    _models_parser(sub)
    p_studies = sub.add_parser("studies", help="release a held (or still receiving) study, or route a study again")
    p_studies.add_argument("action", choices=["release", "reprocess"])
    p_studies.add_argument("study_uid")
    p_studies.add_argument("--who", default="local-cli", help="who asks, for the audit trail")
    p_studies.set_defaults(func=studies)
    args = parser.parse_args(argv)
    if args.command == "token":
        args.scope = args.scope or ["system/*.cruds"]
        args.role = args.role or ["admin"]
    setup_logging(get_integration_settings().log_format)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
