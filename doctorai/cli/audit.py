"""`doctorai audit verify`: walk the audit trail's hash chain."""

import argparse

from doctorai.cli.database import database


def verify(args: argparse.Namespace) -> int:
    """Walk the audit chain; exit 1 naming the first record that was changed, removed or reordered."""
    from audit.config import get_settings as get_audit_settings
    from audit.verify import verify as verify_chain
    from storage.db import session_scope

    with database() as engine, session_scope(engine) as session:
        result = verify_chain(session, key=get_audit_settings().audit_key)
    if result.first_break is None:
        print(f"audit chain intact: {result.records} records")
        return 0
    print(f"audit chain broken at record {result.first_break.record_id}: {result.first_break.reason}")
    return 1


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """`doctorai audit verify`."""
    p_audit = sub.add_parser("audit", help="audit trail tools")
    audit_sub = p_audit.add_subparsers(dest="audit_command", required=True)
    audit_sub.add_parser("verify", help="check the hash chain of the audit trail").set_defaults(func=verify)
