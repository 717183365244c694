"""Export of the audit trail to a syslog collector (RFC 5424 over TCP and TLS, DICOM PS3.15 A.5)."""

import socket
import ssl
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from sqlalchemy import Engine

from audit.config import AuditSettings
from audit.log import append
from audit.records import INSTANCE_STORED, RESOURCE_READ, AuditRecord
from audit.syslog import Collector, ExportUnavailable, export_pending
from doctorai.stack import free_ports
from storage.db import session_scope


class SyslogListener:
    """A test collector: accepts connections and splits octet-counted frames (RFC 6587 3.4.1)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.tls = tls
        self.messages: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()  # a client that refused our certificate: nothing was sent
                    continue
            data = b""
            with conn:
                while chunk := conn.recv(65536):
                    data += chunk
            while data:
                length, _, rest = data.partition(b" ")
                self.messages.append(rest[: int(length)])
                data = rest[int(length):]

    def wait_for(self, count: int) -> list[bytes]:
        import time

        deadline = time.monotonic() + 10
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[SyslogListener]:
    server = SyslogListener()
    yield server
    server.close()


def fill(db: Engine) -> None:
    with session_scope(db) as s:
        append(s, AuditRecord(hop=INSTANCE_STORED, correlation_id="c", agent_who="ae:PACS", agent_address="10.1.2.3",
                              entity_what="1.2.3.4", detail={"study_uid": "1.2.3"}))
        append(s, AuditRecord(hop=RESOURCE_READ, correlation_id="c", agent_who="client:ehr", entity_what="DiagnosticReport/x"))


def check_ps315(message: bytes) -> ET.Element:
    """Parse one syslog message and check the elements PS3.15 A.5.1 requires."""
    header, _, body = message.partition(b"\xef\xbb\xbf")
    fields = header.decode().split(" ")
    assert fields[0] == "<85>1" and fields[3] == "DOCTORAI" and fields[5] == "IHE+RFC-3881"
    root = ET.fromstring(body)
    assert root.tag == "AuditMessage"
    event = root.find("EventIdentification")
    assert event is not None and event.get("EventDateTime") and event.get("EventOutcomeIndicator") is not None
    event_id = event.find("EventID")
    assert event_id is not None and event_id.get("csd-code") and event_id.get("codeSystemName") == "DCM"
    participants = root.findall("ActiveParticipant")
    assert participants and all(p.get("UserID") and p.get("UserIsRequestor") in ("true", "false") for p in participants)
    source = root.find("AuditSourceIdentification")
    assert source is not None and source.get("AuditSourceID") == "DOCTORAI"
    for obj in root.findall("ParticipantObjectIdentification"):
        assert obj.get("ParticipantObjectID") and obj.find("ParticipantObjectIDTypeCode") is not None
    return root


def test_records_reach_the_collector_once_in_order(db: Engine, listener: SyslogListener) -> None:
    fill(db)
    collector = Collector("127.0.0.1", listener.port, tls=None)
    settings = AuditSettings()
    assert export_pending(db, collector, settings) == 2
    assert export_pending(db, collector, settings) == 0  # the cursor moved: nothing is sent twice
    first, second = (check_ps315(m) for m in listener.wait_for(2))
    assert first.find("EventIdentification/EventID").get("csd-code") == "110104"  # type: ignore[union-attr]
    study = [o for o in first.findall("ParticipantObjectIdentification") if o.get("ParticipantObjectID") == "1.2.3"]
    assert study and study[0].find("ParticipantObjectIDTypeCode").get("csd-code") == "110180"  # type: ignore[union-attr]
    assert first.find("ActiveParticipant").get("NetworkAccessPointID") == "10.1.2.3"  # type: ignore[union-attr]
    assert second.find("EventIdentification").get("EventActionCode") == "R"  # type: ignore[union-attr]


def test_collector_down_keeps_records_for_later(db: Engine) -> None:
    fill(db)
    port = free_ports().http
    collector = Collector("127.0.0.1", port, tls=None)
    with pytest.raises(ExportUnavailable):
        export_pending(db, collector, AuditSettings())
    server = SyslogListener()
    try:
        assert export_pending(db, Collector("127.0.0.1", server.port, tls=None), AuditSettings()) == 2
        assert len(server.wait_for(2)) == 2
    finally:
        server.close()


def test_export_over_tls_with_a_test_ca(db: Engine, tmp_path: Path) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    fill(db)
    server = SyslogListener(tls=server_context)
    try:
        assert export_pending(db, Collector("127.0.0.1", server.port, tls=client_context), AuditSettings()) == 2
        for message in server.wait_for(2):
            check_ps315(message)
    finally:
        server.close()
    # A collector whose certificate we do not trust is not sent anything.
    untrusted = SyslogListener(tls=server_context)
    try:
        with pytest.raises(ExportUnavailable):
            export_pending(db, Collector("127.0.0.1", untrusted.port, tls=ssl.create_default_context()), AuditSettings())
    finally:
        untrusted.close()
