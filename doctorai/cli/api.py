"""Access to the FHIR API: `token` prints a bearer token, `clients` manages its SMART Backend Services clients."""

import argparse
import sys
from pathlib import Path

from doctorai.cli.database import database
from fhir_api.auth.tokens import ROLES


def token(args: argparse.Namespace) -> int:
    """Print a bearer token signed with this engine's secret, or revoke one (`doctorai token revoke`)."""
    from fhir_api.auth.tokens import issue_token
    from fhir_api.config import get_settings as get_api_settings

    if args.action == "revoke":
        return _revoke(args)
    # Least privilege (issue 18): nothing is granted unless asked for, for DOCTORAI_TOKEN_TTL_SECONDS.
    if not args.role and not args.scope:
        print("doctorai token: name what it grants with --role and/or --scope (nothing by default)", file=sys.stderr)
        return 1
    scopes, roles = args.scope or [], args.role or []
    print(issue_token(get_api_settings(), subject=args.subject, scopes=scopes, roles=roles, ttl_seconds=args.ttl))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    """Revoke a token by its jti or the token itself, audited with the operating system user as agent."""
    import getpass

    from audit import log as audit_log
    from audit.records import (
        ADMIN_SECURITY,
        USER_SECURITY_ATTRIBUTES_CHANGED,
        AuditRecord,
    )
    from fhir_api.auth import revocation
    from fhir_api.config import get_settings as get_api_settings
    from fhir_api.errors import FhirError
    from storage.db import session_scope

    given = args.jti_or_token.strip()
    by = f"cli:{getpass.getuser()}"
    try:
        what = revocation.target(
            get_api_settings(), jti="" if given.count(".") == 2 else given, token=given if given.count(".") == 2 else ""
        )
    except FhirError as exc:
        print(f"doctorai token revoke: {exc}", file=sys.stderr)
        return 2
    with database() as engine, session_scope(engine) as session:
        row = revocation.revoke(session, what, by=by, reason=args.reason)
        audit_log.append(
            session,
            AuditRecord(
                hop=ADMIN_SECURITY,
                correlation_id="admin",
                agent_who=by,
                entity_what=f"tokens/{row.jti}"[:256],
                detail={"alert_type": USER_SECURITY_ATTRIBUTES_CHANGED, "change": "revoked", "reason": row.reason},
            ),
        )
    print(f"token {row.jti} revoked (subject {row.subject or 'unknown'})")
    return 0


def clients(args: argparse.Namespace) -> int:
    """Register, list or remove API clients (SMART Backend Services) in the engine's database."""
    import secrets

    from fhir_api.auth import clients as api_clients
    from storage.db import session_scope

    with database() as engine, session_scope(engine) as session:
        if args.action == "list":
            for client in api_clients.all_clients(session):
                print(f"{client.client_id}\t{client.auth_method}\t{client.scopes}\t{client.name}")
            return 0
        if args.action == "remove":
            if not api_clients.remove(session, args.client_id):
                print(f"doctorai clients remove: no client {args.client_id}", file=sys.stderr)
                return 1
            print(f"client {args.client_id} removed")
            return 0
        jwks = ""
        if args.jwks:
            jwks = Path(args.jwks).read_text()
        elif args.public_key:
            jwks = api_clients.jwks_from_public_key(Path(args.public_key).read_bytes())
        secret = "" if jwks else secrets.token_urlsafe(32)
        api_clients.register(session, client_id=args.client_id, name=args.name, scopes=args.scope, jwks=jwks, secret=secret)
    if secret:
        # Shown once: only its hash is stored.
        print(f"client_id={args.client_id}\nclient_secret={secret}")
    else:
        print(f"client_id={args.client_id} (private_key_jwt)")
    return 0


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """`doctorai token` and `doctorai clients`."""
    p_token = sub.add_parser("token", help="print a bearer token for the local engine, or revoke one")
    p_token.add_argument("--subject", default="local-cli")
    p_token.add_argument(
        "--scope", action="append", default=None, help="SMART scope, repeatable, e.g. system/*.rs (default none)"
    )
    p_token.add_argument(
        "--role",
        action="append",
        choices=list(ROLES),
        default=None,
        help="role, repeatable (default none): admin (admin API), operator (admin API read-only), "
        "auditor (audit trail), metrics (/metrics only)",
    )
    p_token.add_argument("--ttl", type=int, default=None, help="lifetime in seconds (default DOCTORAI_TOKEN_TTL_SECONDS)")
    p_token.set_defaults(func=token, action="issue")
    token_sub = p_token.add_subparsers(dest="action")
    p_revoke = token_sub.add_parser("revoke", help="revoke a token before it expires (refused by the API from now on)")
    p_revoke.add_argument("jti_or_token", help="the token's jti claim, or the token itself")
    p_revoke.add_argument("--reason", default="")
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
