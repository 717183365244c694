"""HL7 v2 traffic: `destinations` where results are sent as ORU^R01, `deliveries` how sending went,
`hl7 unmapped` what the FHIR mapping of a received message left out."""

import argparse
import sys

from doctorai.cli.database import database


def destinations_add_mllp(args: argparse.Namespace) -> int:
    """Configure an MLLP destination that every new report is sent to as ORU^R01 (issue 4)."""
    from storage.db import session_scope
    from storage.destinations import DestinationExists, add_destination

    with database() as engine, session_scope(engine) as session:
        try:
            row = add_destination(session, name=args.name, kind="mllp", host=args.host, port=args.port, tls=args.tls)
        except DestinationExists:
            print(f"a destination named {args.name} exists already", file=sys.stderr)
            return 1
        print(f"destination {row.id} {row.name}: mllp://{row.host}:{row.port}{' (TLS)' if row.tls else ''}")
        return 0


def destinations_list(args: argparse.Namespace) -> int:
    """Print the configured destinations and their delivery counts."""
    from storage.db import session_scope
    from storage.deliveries import deliveries
    from storage.destinations import destinations

    with database() as engine, session_scope(engine) as session:
        rows = deliveries(session)
        for d in destinations(session):
            counts = {s: sum(1 for r in rows if r.destination_id == d.id and r.status == s) for s in ("pending", "sent", "dead")}
            state = "enabled" if d.enabled else "disabled"
            print(f"{d.id}\t{d.name}\t{d.kind}://{d.host}:{d.port}\t{state}\t{counts}")
    return 0


def deliveries_list(args: argparse.Namespace) -> int:
    """Print outbound deliveries (optionally of one status) with attempts and last error."""
    from storage.db import session_scope
    from storage.deliveries import deliveries

    with database() as engine, session_scope(engine) as session:
        for r in deliveries(session, status=args.status):
            print(f"{r.id}\t{r.status}\tdestination {r.destination_id}\t{r.subject}\tattempts {r.attempts}\t{r.ack_code}\t{r.last_error}")
    return 0


def hl7_unmapped(args: argparse.Namespace) -> int:
    """Print, as JSON, the fields of a received HL7 message that the FHIR mapping did not use."""
    import json

    from storage.db import session_scope
    from storage.hl7_messages import unmapped_report

    with database() as engine, session_scope(engine) as session:
        try:
            report = unmapped_report(session, message_id=args.message_id)
        except KeyError:
            print(f"no HL7 message {args.message_id}", file=sys.stderr)
            return 1
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """`doctorai destinations`, `doctorai deliveries` and `doctorai hl7`."""
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
