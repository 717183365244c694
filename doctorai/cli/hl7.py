"""HL7 v2 traffic: `destinations` where results are sent as ORU^R01, `deliveries` how sending went,
`hl7 unmapped` what the FHIR mapping of a received message left out."""

import argparse
import sys
from pathlib import Path

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
        report = unmapped_report(session, message_id=args.message_id, sender=args.sender)
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


def split_messages(data: bytes) -> list[bytes]:
    """The messages of a file: each starts at an MSH segment; line ends become the segment separator CR (HL7 v2 2.5.3)."""
    lines = [line for line in data.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r") if line.strip()]
    messages: list[list[bytes]] = []
    for line in lines:
        if line.startswith(b"MSH") or not messages:
            messages.append([])
        messages[-1].append(line)
    return [b"\r".join(segments) + b"\r" for segments in messages]


def hl7_send(args: argparse.Namespace) -> int:
    """Send the messages of HL7 v2 files over MLLP on one connection, one at a time, and print each one's
    acknowledgement code; exit 1 unless every message was accepted (AA, or CA in enhanced mode)."""
    import asyncio
    import ssl

    from integration.hl7v2 import decode, read_header
    from integration.outbound.mllp import ack_code, exchange

    # Every file is read, and every header checked, before anything is sent.
    messages = [
        (path, read_header(decode(m)).control_id, m) for path in args.files for m in split_messages(Path(path).read_bytes())
    ]

    async def send_all() -> int:
        context = ssl.create_default_context(cafile=args.ca_file or None) if args.tls else None
        reader, writer = await asyncio.wait_for(asyncio.open_connection(args.host, args.port, ssl=context), args.timeout)
        refused = 0
        try:
            for path, control_id, message in messages:
                answer = await exchange(reader, writer, message, timeout=args.timeout)
                code, detail = ack_code(answer, control_id=control_id)
                refused += code not in ("AA", "CA")
                print(f"{path}: {control_id} {code}{' ' + detail if detail else ''}")
        finally:
            writer.close()
        return 1 if refused else 0

    return asyncio.run(send_all())


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
    p_unmapped.add_argument("message_id", help="the message's id, or its control id (MSH-10)")
    p_unmapped.add_argument("--sender", default="", help="MSH-3 or MSH-3^MSH-4, when several senders used the control id")
    p_unmapped.set_defaults(func=hl7_unmapped)
    p_send = hl7_sub.add_parser("send", help="send HL7 v2 message files over MLLP and print each acknowledgement")
    p_send.add_argument("files", nargs="+", help="files of one or more messages (each from its MSH segment)")
    p_send.add_argument("--host", default="127.0.0.1")
    p_send.add_argument("--port", type=int, default=2575, help="default 2575, the engine's MLLP port")
    p_send.add_argument("--tls", action="store_true", help="connect with TLS")
    p_send.add_argument("--ca-file", default="", help="CA certificates (PEM) the listener's certificate chains to")
    p_send.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each acknowledgement")
    p_send.set_defaults(func=hl7_send)
