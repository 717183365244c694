"""Export of the audit trail to a syslog collector: RFC 5424 messages, octet-counted over TCP or TLS.

Delivery is at-least-once and in order: a cursor per destination advances only after the
collector took the batch, so an outage delays the export and loses nothing. `python -m integration`
runs the export (integration/audit_export.py).
"""

import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select

from audit.atna import to_atna_xml
from audit.config import AuditSettings
from storage.db import session_scope
from storage.errors import StorageError
from storage.tables.audit import AuditEvent, AuditExport

# PRI = facility 10 (security/authorization, "authpriv") * 8 + severity 5 (notice), as IHE ATNA
# (ITI TF-2a 3.20.6) asks; MSGID names the payload format.
PRI = 10 * 8 + 5
MSGID = "IHE+RFC-3881"


class ExportUnavailable(StorageError):
    """The collector cannot be reached or dropped the connection; try again later."""

    retriable = True


def rfc5424(payload: bytes, *, app_name: str, hostname: str, at: datetime) -> bytes:
    """One syslog message (RFC 5424 section 6): header, no structured data, the XML as MSG."""
    header = f"<{PRI}>1 {at.astimezone(UTC).isoformat()} {hostname or '-'} {app_name} - {MSGID} - "
    # RFC 5424 6.4: a UTF-8 MSG starts with the byte order mark.
    return header.encode("ascii") + b"\xef\xbb\xbf" + payload


def octet_frame(message: bytes) -> bytes:
    """Octet-counting framing of syslog over TCP and TLS (RFC 6587 3.4.1, RFC 5425 4.3)."""
    return f"{len(message)} ".encode("ascii") + message


@dataclass(frozen=True)
class Collector:
    """Where the audit repository listens."""

    host: str
    port: int
    tls: ssl.SSLContext | None

    @property
    def name(self) -> str:
        """The destination's name in the export cursor table."""
        return f"syslog://{self.host}:{self.port}"


def make_collector(settings: AuditSettings) -> Collector | None:
    """The configured collector, or None when export is off."""
    if not settings.audit_syslog_host:
        return None
    context = None
    if settings.audit_syslog_tls:
        context = ssl.create_default_context(cafile=str(settings.audit_syslog_ca_file) if settings.audit_syslog_ca_file else None)
        if settings.audit_syslog_cert_file:
            context.load_cert_chain(settings.audit_syslog_cert_file, settings.audit_syslog_key_file)
    return Collector(settings.audit_syslog_host, settings.audit_syslog_port, context)


def send(collector: Collector, frames: list[bytes], *, timeout: float = 10.0) -> None:
    """Deliver frames on one connection; raise ExportUnavailable when the collector cannot take them."""
    try:
        with socket.create_connection((collector.host, collector.port), timeout=timeout) as raw:
            if collector.tls is not None:
                with collector.tls.wrap_socket(raw, server_hostname=collector.host) as secure:
                    secure.sendall(b"".join(frames))
            else:
                raw.sendall(b"".join(frames))
    except OSError as exc:  # refused, reset, timed out, TLS handshake failure (ssl.SSLError is an OSError)
        raise ExportUnavailable(f"{collector.name}: {exc!r}") from exc


def export_pending(engine: Engine, collector: Collector, settings: AuditSettings) -> int:
    """Send the records after the destination's cursor, then advance it; return how many went out."""
    with session_scope(engine) as session:
        cursor = session.get(AuditExport, collector.name)
        after = cursor.last_id if cursor else 0
        rows = list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id).limit(settings.audit_export_batch)
            )
        )
    if not rows:
        return 0
    hostname = socket.gethostname()
    frames = [
        octet_frame(
            rfc5424(
                to_atna_xml(row, source_id=settings.audit_source_id, enterprise_site_id=settings.audit_enterprise_site_id),
                app_name=settings.audit_source_id,
                hostname=hostname,
                at=row.recorded_at,
            )
        )
        for row in rows
    ]
    send(collector, frames)
    with session_scope(engine) as session:
        cursor = session.get(AuditExport, collector.name)
        if cursor is None:
            cursor = AuditExport(destination=collector.name, last_id=0)
            session.add(cursor)
        cursor.last_id = max(cursor.last_id, rows[-1].id)
        cursor.updated_at = datetime.now(UTC)
    return len(rows)

