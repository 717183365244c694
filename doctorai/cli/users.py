"""`doctorai users`: the people who sign in to the console (add, list, remove, unlock, passwd).

Passwords come from a prompt (typed twice) or, for scripts, from standard input with
`--password-stdin`; they are stored only as Argon2id hashes (fhir_api/auth/users.py). Every change
is audited as a DCM 110137 User Security Attributes Changed, with the operating system user as agent.
"""

import argparse
import getpass
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from doctorai.cli.database import database

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("the same again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def _audit(session: "Session", name: str, change: str) -> None:
    from audit import log as audit_log
    from audit.records import ADMIN_SECURITY, USER_SECURITY_ATTRIBUTES_CHANGED, AuditRecord

    audit_log.append(
        session,
        AuditRecord(
            hop=ADMIN_SECURITY,
            correlation_id="admin",
            agent_who=f"cli:{getpass.getuser()}",
            entity_what=f"users/{name}",
            detail={"alert_type": USER_SECURITY_ATTRIBUTES_CHANGED, "change": change},
        ),
    )


def _run(args: argparse.Namespace) -> str:
    from fhir_api.auth import users
    from fhir_api.config import get_settings
    from storage.db import session_scope
    from storage.users import get_user, remove_user, user_query

    minimum = get_settings().console_password_min_length
    with database() as engine, session_scope(engine) as session:
        if args.action == "list":
            now = datetime.now(UTC)
            lines = []
            for row in session.scalars(user_query().order_by("name")):
                locked = row.locked_until is not None and row.locked_until > now
                state = "disabled" if row.disabled else "locked" if locked else "active"
                seen = f"{row.last_sign_in_at:%Y-%m-%d %H:%M}" if row.last_sign_in_at else "never"
                lines.append(f"{row.name:24} {row.role:9} {state:9} last sign-in {seen}")
            return "\n".join(lines) or "no users yet: doctorai users add NAME --role admin"
        if args.action == "add":
            users.create_user(session, name=args.name, role=args.role, password=_password(args), min_length=minimum)
            _audit(session, args.name, f"added with role {args.role}")
            return f"{args.name} added with role {args.role}"
        user = get_user(session, name=args.name)
        if user is None:
            raise LookupError(f"no user {args.name}")
        if args.action == "remove":
            remove_user(session, name=args.name)
            _audit(session, args.name, "removed")
            return f"{args.name} removed"
        if args.action == "unlock":
            users.unlock(user)
            _audit(session, args.name, "unlocked")
            return f"{args.name} unlocked"
        users.set_password(session, user, password=_password(args), min_length=minimum)
        _audit(session, args.name, "password changed")
        return f"{args.name}'s password changed; their sessions ended"


def run(args: argparse.Namespace) -> int:
    """Run one `doctorai users` action; exit 1 with one line saying why when it is refused."""
    from storage.errors import StorageError
    from storage.users import UserExists

    try:
        print(_run(args))
    except (ValueError, LookupError, UserExists, StorageError) as exc:
        print(f"doctorai users {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """`doctorai users add|list|remove|unlock|passwd`."""
    p_users = sub.add_parser("users", help="people who sign in to the console")
    p_users.set_defaults(func=run)
    actions = p_users.add_subparsers(dest="action", required=True)
    p_add = actions.add_parser("add", help="add a person with a role; the password is asked for")
    p_add.add_argument("name")
    p_add.add_argument(
        "--role",
        required=True,
        choices=["admin", "operator", "auditor"],
        help="admin: everything but the audit trail; operator: reads; auditor: the audit trail",
    )
    actions.add_parser("list", help="every person, their role and state")
    for action, text in (("remove", "remove a person and end their sessions"), ("unlock", "lift a lock-out")):
        actions.add_parser(action, help=text).add_argument("name")
    p_passwd = actions.add_parser("passwd", help="set a new password; the person's sessions end")
    p_passwd.add_argument("name")
    for p in (p_add, p_passwd):
        p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
