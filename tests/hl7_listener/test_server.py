"""The MLLP listener on loopback with real rclone S3 and SQLite, driven by python-hl7's MLLP client."""

import asyncio
import socket
import subprocess
import sys
import ssl
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trustme
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from sqlalchemy import Engine, func, select

from storage.fhir import store
from hl7_listener import __main__ as hl7_main
from hl7_listener.config import MllpSettings
from hl7_listener.server import serve
from integration import process
from integration.outbound import mllp
from integration.config import IntegrationSettings
from doctorai.stack import StackConfig, free_ports
from storage.config import StorageSettings
from storage.db import make_engine, migrate, session_scope
from storage.destinations import add_destination
from storage.hl7_messages import unmapped_report
from storage.objects import ObjectStore, make_object_store
from storage.tables.audit import AuditEvent
from storage.tables.fhir import FhirResourceVersion
from storage.tables.hl7 import Hl7Message, Order
from storage.tables.outbound import Delivery
from storage.tables.pipeline import OutboxEvent
from tests.mllp_peers import CR, FS, VT, receiver, sample, segment, send, send_raw, wait_for
from tests.probes import get
from tests.senders import sending

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "hl7"
GOOD = [
    "adt_a01_v251.hl7",
    "adt_a04_v23.hl7",
    "adt_a08_v24.hl7",
    "adt_a31_v25.hl7",
    "adt_a40_v25.hl7",
    "orm_o01_nw_v23.hl7",
    "orm_o01_sc_v24.hl7",
    "omi_o23_v251.hl7",
    "oru_r01_v251.hl7",
    "python_hl7_oru_r01.hl7",
    "orm_o01_ca_v23.hl7",
]


class Listener:
    """Our listener serving in a thread of its own, on a fresh database."""

    def __init__(self, settings: MllpSettings, engine: Engine, objects: ObjectStore) -> None:
        self.settings, self.engine, self.objects = settings, engine, objects
        self.port = settings.mllp_port
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self.server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()

            def bound(server: asyncio.Server) -> None:
                self.server = server
                self._ready.set()

            await serve(self.settings, engine=self.engine, objects=self.objects, stop=self._stop, ready=bound)

        self._loop.run_until_complete(main())
        self._loop.close()

    def start(self) -> "Listener":
        self._thread.start()
        assert self._ready.wait(30), "listener did not start"
        return self

    def stop(self) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def count(self, table: type, *where: object) -> int:
        with session_scope(self.engine) as session:
            return session.scalar(select(func.count()).select_from(table).where(*where)) or 0  # type: ignore[arg-type]


@pytest.fixture
def start_listener(services: StackConfig, tmp_path: Path) -> Iterator[Callable[..., Listener]]:
    """Start a listener with settings overrides (and optionally another object store)."""
    url = f"sqlite:///{tmp_path / 'doctorai.db'}"
    migrate(url)
    engine = make_engine(url)
    started: list[Listener] = []

    def start(storage: StorageSettings | None = None, **overrides: object) -> Listener:
        settings = MllpSettings(mllp_port=free_ports().mllp, mllp_metrics_port=0, **overrides)  # type: ignore[arg-type]
        objects = make_object_store(storage or services.storage_settings())
        listener = Listener(settings, engine, objects).start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()
    engine.dispose()


def test_every_message_type_is_stored_then_acknowledged(start_listener: Callable[..., Listener]) -> None:
    """ADT A01/A04/A08/A31/A40, ORM^O01 (new, status, cancel), OMI^O23, ORU^R01 (ours and python-hl7's)."""
    listener = start_listener()
    answers = send(listener.port, *[sample(n) for n in GOOD])
    for name, answer in zip(GOOD, answers, strict=True):
        msa = segment(answer, "MSA")
        # adt_a01 asks for enhanced mode (MSH-15 AL): its answer is the commit ACK.
        assert msa[1] == ("CA" if name == "adt_a01_v251.hl7" else "AA"), (name, answer)
        assert msa[2] == segment(sample(name), "MSH")[9]
        assert segment(answer, "MSH")[11] == segment(sample(name), "MSH")[11]  # answered in the sender's version
    strict = parse_message(answers[-2].decode(), validation_level=VALIDATION_LEVEL.STRICT)  # v2.4: ACK^R01^ACK
    assert strict.validate()
    with session_scope(listener.engine) as session:
        rows = list(session.scalars(select(Hl7Message).order_by(Hl7Message.received_at)))
        assert [r.status for r in rows] == ["accepted"] * len(GOOD)
        # The raw bytes are in object storage exactly as sent.
        assert listener.objects.get_bytes(rows[1].object_key) == sample(GOOD[1])
        assert session.scalar(select(func.count()).select_from(OutboxEvent).where(OutboxEvent.topic == "hl7.received")) == len(GOOD)
        accepted = session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.subtype == "hl7-accepted"))
        assert accepted == len(GOOD)
        # PID-3 "9RG1" is the Patient a DICOM study with PatientID 9RG1 lands on.
        patient = store.read(session, "Patient", "9RG1")
        assert patient.name[0].family == "Roentgen"  # type: ignore[attr-defined]
        # A40: the surviving patient replaces the merged one, which is inactive and replaced-by it.
        survivor = store.read(session, "Patient", "PAT0002")
        merged = store.read(session, "Patient", "PAT0099")
        assert [(link.type, link.other.reference) for link in survivor.link] == [("replaces", "Patient/PAT0099")]  # type: ignore[attr-defined]
        assert merged.active is False  # type: ignore[attr-defined]
        assert merged.link[0].type == "replaced-by"  # type: ignore[attr-defined]
        # ORU from another system: a DiagnosticReport based on the OMI's order, searchable by patient.
        reports = store.search(session, "DiagnosticReport", [("patient", ["Patient/PAT0005"])])
        assert reports and reports[0].basedOn[0].reference.startswith("ServiceRequest/sr-")  # type: ignore[attr-defined]
        assert store.read(session, "ServiceRequest", reports[0].basedOn[0].reference.split("/")[1]).status == "active"  # type: ignore[attr-defined]
        # Every unused field is in the message's unmapped report.
        a01 = next(r for r in rows if r.control_id == "ADT0001")
        report = unmapped_report(session, message_id=a01.id)
        assert report["ZPI[1]-2"] == "42" and report["NK1[1]-2.1"] == "Roentgen" and "PID[1]-5.1" not in report


def test_a_merge_moves_the_merged_patients_orders_and_resources(start_listener: Callable[..., Listener]) -> None:
    """ADT^A40 after an order for the merged patient: the order, its ServiceRequest and the study
    index now belong to the surviving patient; the ServiceRequest's history keeps the old subject."""
    listener = start_listener()
    order = sample("orm_o01_nw_v23.hl7").replace(b"9RG1^^^HOSP^MR", b"PAT0099^^^HOSP^MR")
    first, second = send(listener.port, order, sample("adt_a40_v25.hl7"))
    assert segment(first, "MSA")[1] == segment(second, "MSA")[1] == "AA"
    with session_scope(listener.engine) as session:
        (row,) = session.scalars(select(Order))
        assert row.patient_id == "PAT0002"
        request = store.read(session, "ServiceRequest", row.service_request_id)
        assert request.subject.reference == "Patient/PAT0002"  # type: ignore[attr-defined]
        assert store.vread(session, "ServiceRequest", row.service_request_id, 1).subject.reference == "Patient/PAT0099"  # type: ignore[attr-defined]
        assert store.search(session, "ServiceRequest", [("patient", ["Patient/PAT0099"])]) == []


def test_application_acks_go_to_the_senders_return_destination(start_listener: Callable[..., Listener]) -> None:
    """Enhanced mode with MSH-16: the commit ACK on the connection, then the application ACK as a
    message of its own to the MLLP destination configured for the sender, through the outbound sender."""
    listener = start_listener()
    good = sample("adt_a01_v251.hl7").replace(b"|||AL|NE", b"|||AL|AL")
    bad = sample("bad_no_patient_id.hl7").replace(b"|P|2.5\r", b"|P|2.5|||AL|ER\r")
    plain = sample("adt_a04_v23.hl7")  # original mode: no application ACK
    with receiver(lambda _: "CA") as ehr:
        with session_scope(listener.engine) as session:
            row = add_destination(session, name="ehr-acks", kind="mllp", host="127.0.0.1", port=ehr.port)
            row.options = {"application_acks_for": "EHR^HOSP"}
        answers = send(listener.port, good, bad, plain)
        assert [segment(a, "MSA")[1] for a in answers] == ["CA", "CE", "AA"]
        settings = IntegrationSettings(outbound_poll_seconds=0.05, retry_first_delay_seconds=0.05)
        until = partial(wait_for, lambda: len(ehr.received) >= 2, timeout=30, what="two application ACKs")
        sending(listener.engine, settings, {"mllp": mllp.transport(settings)}, until)
    by_original = {segment(m, "MSA")[2]: m for m in ehr.received}
    assert sorted(by_original) == ["ADT0001", "BAD0004"]
    assert segment(by_original["ADT0001"], "MSA")[1] == "AA"
    assert segment(by_original["BAD0004"], "MSA")[1] == "AE"
    assert segment(by_original["BAD0004"], "ERR")[3].split("^")[0] == "101"
    assert segment(by_original["ADT0001"], "MSH")[14:16] == ["AL", "NE"]  # MSH-15, MSH-16
    assert listener.count(Delivery, Delivery.status == "sent") == 2


def test_a_duplicate_is_acknowledged_again_and_not_processed_twice(start_listener: Callable[..., Listener]) -> None:
    listener = start_listener()
    first, second = send(listener.port, sample("orm_o01_nw_v23.hl7"), sample("orm_o01_nw_v23.hl7"))
    assert segment(first, "MSA")[1:3] == segment(second, "MSA")[1:3] == ["AA", "ORM0001"]
    assert listener.count(Hl7Message) == 1
    assert listener.count(OutboxEvent) == 1
    assert listener.count(FhirResourceVersion, FhirResourceVersion.resource_type == "ServiceRequest") == 1
    with session_scope(listener.engine) as session:
        details = [a.detail for a in session.scalars(select(AuditEvent).where(AuditEvent.subtype == "hl7-accepted"))]
    assert [d.get("duplicate", "false") for d in details] == ["false", "true"]


def test_many_connections_at_once_each_get_their_own_ack(start_listener: Callable[..., Listener]) -> None:
    """Messages that wait together are committed together (hl7_listener.commits); each still gets its ACK."""
    listener = start_listener()
    template = sample("adt_a04_v23.hl7")
    answers: dict[str, bytes] = {}

    def sender(connection: int) -> None:
        ids = [f"C{connection}M{i}" for i in range(8)]
        messages = [template.replace(b"ADT0002", i.encode()).replace(b"PAT0002", f"P{i}".encode()) for i in ids]
        # Every connection ends with the same message, sent by all at about the same time.
        shared = template.replace(b"ADT0002", b"SHARED")
        for control_id, answer in zip([*ids, "SHARED"], send(listener.port, *messages, shared), strict=True):
            answers[f"{connection}:{control_id}"] = answer

    threads = [threading.Thread(target=sender, args=(c,)) for c in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == 6 * 9
    for key, answer in answers.items():
        assert segment(answer, "MSA")[1:3] == ["AA", key.split(":")[1]], answer
    assert listener.count(Hl7Message) == 6 * 8 + 1  # the shared message once
    with session_scope(listener.engine) as session:
        details = [a.detail for a in session.scalars(select(AuditEvent).where(AuditEvent.subtype == "hl7-accepted"))]
    assert sum(d.get("duplicate") == "true" for d in details) == 5


@pytest.mark.parametrize(
    ("name", "code", "error"),
    [
        ("bad_no_msh.hl7", "AR", "100"),
        ("bad_encoding.hl7", "AR", "102"),
        ("bad_unknown_type.hl7", "AR", "200"),
        ("bad_no_patient_id.hl7", "AE", "101"),
    ],
)
def test_malformed_messages_get_a_reason(
    start_listener: Callable[..., Listener], name: str, code: str, error: str
) -> None:
    listener = start_listener()
    (answer,) = send(listener.port, sample(name))
    assert segment(answer, "MSA")[1] == code
    assert segment(answer, "ERR")[3].split("^")[0] == error  # ERR-3 (HL7 table 0357), v2.5 layout
    assert listener.count(AuditEvent, AuditEvent.subtype == "hl7-rejected") == 1
    assert listener.count(OutboxEvent) == 0
    # The listener goes on serving.
    (after,) = send(listener.port, sample("adt_a04_v23.hl7"))
    assert segment(after, "MSA")[1] == "AA"


def test_unsupported_version_is_refused(start_listener: Callable[..., Listener]) -> None:
    listener = start_listener()
    message = sample("adt_a04_v23.hl7").replace(b"|P|2.3\r", b"|P|2.9\r")
    (answer,) = send(listener.port, message)
    assert segment(answer, "MSA")[1] == "AR" and segment(answer, "ERR")[3].startswith("203^")


def test_bad_framing_oversize_and_idle(start_listener: Callable[..., Listener]) -> None:
    listener = start_listener(mllp_max_message_bytes=4096, mllp_idle_timeout_seconds=1.0)
    good = sample("adt_a04_v23.hl7")
    # Bytes before a block and a block restarted midway are noise; the block after them is served.
    (answer,) = send_raw(listener.port, b"garbage\r\n" + VT + b"MSH|half a message" + VT + good + FS + CR)
    assert segment(answer, "MSA")[1] == "AA"
    assert listener.count(AuditEvent, AuditEvent.entity_what == "mllp:framing") == 1
    # A block over the limit: AR naming the size, then the connection closes.
    big = good + b"ZXX|" + b"x" * 8000 + b"\r"
    with socket.create_connection(("127.0.0.1", listener.port), timeout=30) as sock:
        sock.sendall(VT + big + FS + CR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert b"MSA|AR|ADT0002" in data and b"exceeds 4096 bytes" in data
    # An idle connection is closed by the listener.
    with socket.create_connection(("127.0.0.1", listener.port), timeout=30) as sock:
        assert sock.recv(10) == b""


def test_storage_down_answers_ae_and_writes_nothing(start_listener: Callable[..., Listener], services: StackConfig) -> None:
    dead = services.storage_settings().model_copy(update={"s3_endpoint": f"127.0.0.1:{free_ports().s3}"})
    listener = start_listener(storage=dead)
    (answer,) = send(listener.port, sample("adt_a04_v23.hl7"))
    assert segment(answer, "MSA")[1] == "AE"
    assert listener.count(Hl7Message) == 0 and listener.count(OutboxEvent) == 0
    assert listener.count(FhirResourceVersion) == 0


def test_the_readme_examples_are_sent_with_doctorai_hl7_send_and_accepted(start_listener: Callable[..., Listener]) -> None:
    listener = start_listener()
    files = [str(EXAMPLES / "adt_a04.hl7"), str(EXAMPLES / "orm_o01.hl7")]
    argv = [sys.executable, "-m", "doctorai.cli", "hl7", "send", *files, "--port", str(listener.port)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{files[0]}: EXADT0001 AA", f"{files[1]}: EXORM0001 AA"]
    with session_scope(listener.engine) as session:
        # The order names the RG1 radiograph's patient and accession number: that study will be linked to it.
        order = session.scalars(select(Order)).one()
        assert (order.patient_id, order.accession_number, order.status) == ("9RG1", "exam Number", "active")
        assert store.read(session, "Patient", "9RG1").name[0].family == "CompressedSamples"  # type: ignore[attr-defined]


def test_allowlists(start_listener: Callable[..., Listener]) -> None:
    listener = start_listener(mllp_allowed_senders="RIS|HOSP,OTHERAI|*")
    ok, refused = send(listener.port, sample("orm_o01_nw_v23.hl7"), sample("adt_a04_v23.hl7"))
    assert segment(ok, "MSA")[1] == "AA" and segment(refused, "MSA")[1] == "AR"
    by_address = start_listener(mllp_allowed_addresses="10.0.0.0/8")
    with socket.create_connection(("127.0.0.1", by_address.port), timeout=30) as sock:
        # Closed without an answer, and without reading a byte from a host it does not take: a
        # message that arrived first is unread, so the kernel resets the connection (RFC 9293
        # 3.6.1) instead of ending it; either way the sender gets no ACK and tries again later.
        try:
            sock.sendall(VT + sample("adt_a04_v23.hl7") + FS + CR)
            answer = sock.recv(100)
        except ConnectionError:
            answer = b""
        assert answer == b""
    wait_for(lambda: by_address.count(AuditEvent, AuditEvent.entity_what == "mllp:address") == 1, what="audit")


def test_enhanced_mode_never_means_no_ack(start_listener: Callable[..., Listener]) -> None:
    listener = start_listener()
    quiet = sample("adt_a04_v23.hl7").replace(b"|P|2.3\r", b"|P|2.3|||NE|NE\r").replace(b"ADT0002", b"ADT0102")
    answers = send_raw(listener.port, VT + quiet + FS + CR + VT + sample("adt_a08_v24.hl7") + FS + CR)
    assert segment(answers[0], "MSA")[2] == "ADT0003"  # the first answer is the second message's
    assert listener.count(Hl7Message) == 2


def test_tls(start_listener: Callable[..., Listener], tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    listener = start_listener(mllp_tls_cert=str(cert_file), mllp_tls_key=str(key_file))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    (answer,) = send_raw(listener.port, VT + sample("adt_a04_v23.hl7") + FS + CR, context=context)
    assert segment(answer, "MSA")[1] == "AA"


def test_healthz_fails_once_the_listener_no_longer_accepts(
    services: StackConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: /healthz stayed green whatever became of the listening socket; it now asks the listener."""
    url = f"sqlite:///{tmp_path / 'doctorai.db'}"
    migrate(url)
    engine = make_engine(url)
    ports = free_ports()
    settings = MllpSettings(mllp_port=ports.mllp, mllp_metrics_port=ports.mllp_metrics)
    servers: list[asyncio.Server] = []

    async def serve_and_keep(*args: Any, ready: Callable[[asyncio.Server], None], **kwargs: Any) -> None:
        def bound(server: asyncio.Server) -> None:
            servers.append(server)
            ready(server)

        await serve(*args, ready=bound, **kwargs)

    monkeypatch.setattr(hl7_main, "serve", serve_and_keep)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    storage = services.storage_settings()
    own = process.Own(storage, services.integration_settings(), engine, make_object_store(storage))
    running = partial(hl7_main.listen, stop, settings=settings, own=own)
    thread = threading.Thread(target=loop.run_until_complete, args=(running(),), daemon=True)
    thread.start()
    healthz = f"http://127.0.0.1:{ports.mllp_metrics}/healthz"
    try:
        wait_for(lambda: get(healthz)[0] == 200, what="the listener's health port")
        loop.call_soon_threadsafe(servers[0].close)  # the listening socket is gone; the process lives on
        wait_for(lambda: get(healthz)[0] == 503, what="/healthz to fail")
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
        engine.dispose()



def _refused_counts(listener: Listener, kind: str) -> list[int]:
    with session_scope(listener.engine) as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.entity_what == f"mllp:{kind}"))
        return [int(row.detail["count"]) for row in rows]


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True


def test_at_the_cap_a_silent_connection_makes_room_and_a_sender_is_kept(start_listener: Callable[..., Listener]) -> None:
    """Issue 18: the MLLP listener had no connection cap (and 10 MiB of buffer per connection); with
    one, a flood of idle sockets must not keep a sender out (benchmarks/faults.py measured 0 messages
    a second during 100 idle connections against a cap of 64)."""
    listener = start_listener(mllp_max_connections=1)
    with socket.create_connection(("127.0.0.1", listener.port), timeout=30) as idle:
        with socket.create_connection(("127.0.0.1", listener.port), timeout=30) as sender:
            assert _closed(idle)  # it never sent a block: closed to make room
            sender.sendall(VT + sample("adt_a04_v23.hl7") + FS + CR)
            assert b"MSA|AA" in sender.recv(65536)
            with socket.create_connection(("127.0.0.1", listener.port), timeout=30) as third:
                assert _closed(third)  # the only open connection has spoken: the newcomer is refused
            sender.sendall(VT + sample("adt_a04_v23.hl7") + FS + CR)
            assert b"MSA|AA" in sender.recv(65536)  # the sender is still served
    wait_for(lambda: sum(_refused_counts(listener, "limit")) == 2, what="the refusals' audit records")


def test_a_connection_is_closed_at_its_time_limit_however_busy(start_listener: Callable[..., Listener]) -> None:
    """Issue 18: only the idle timeout bounded a connection; one that kept sending was kept forever."""
    listener = start_listener(mllp_connection_seconds=1.0, mllp_idle_timeout_seconds=120.0)
    with socket.create_connection(("127.0.0.1", listener.port), timeout=60) as sock:
        sock.sendall(VT + b"MSH|^~\\&|")  # a block begun, never ended: within the idle timeout
        assert sock.recv(10) == b""  # closed long before the idle timeout (the socket would time out first)


def test_refused_connections_are_audited_in_aggregate(start_listener: Callable[..., Listener]) -> None:
    """Issue 18: every refused connection wrote an append-only audit record and a log line."""
    listener = start_listener(mllp_allowed_addresses="10.0.0.0/8", mllp_refusal_audit_seconds=1.0)
    for _ in range(100):
        with socket.create_connection(("127.0.0.1", listener.port), timeout=30) as sock:
            try:
                assert sock.recv(1) == b""
            except ConnectionError:
                pass
    wait_for(lambda: sum(_refused_counts(listener, "address")) == 100, what="the aggregate audit records")
    assert len(_refused_counts(listener, "address")) <= 10
    (answer,) = send(start_listener().port, sample("adt_a04_v23.hl7"))
    assert segment(answer, "MSA")[1] == "AA"


def test_a_message_with_a_nul_byte_is_refused_not_failed(start_listener: Callable[..., Listener]) -> None:
    """Issue 18 (the fault harness's fuzzing): a NUL in a message reached the database, which on
    PostgreSQL failed the transaction: an AE "internal error" (send again, for ever) and a
    traceback quoting the row. NUL is no HL7 text: AR, with ERR 102, and stored as refused."""
    listener = start_listener()
    message = sample("adt_a04_v23.hl7").replace(b"PID|", b"PID|\x00", 1)
    (answer,) = send(listener.port, message)
    assert segment(answer, "MSA")[1] == "AR"
    assert "102" in segment(answer, "ERR")[1]  # ERR-1 in a v2.3 answer: code and location
    assert segment(answer, "MSA")[2] == segment(sample("adt_a04_v23.hl7"), "MSH")[9]  # addressed to the message
    with session_scope(listener.engine) as session:
        row = session.scalars(select(Hl7Message).order_by(Hl7Message.received_at.desc())).first()
        assert row is not None and row.status == "rejected" and "NUL" in row.error
    (good,) = send(listener.port, sample("adt_a04_v23.hl7"))
    assert segment(good, "MSA")[1] == "AA"


def test_an_identifier_longer_than_kept_is_refused_not_failed(start_listener: Callable[..., Listener]) -> None:
    """Issue 18 (the fault harness's full fuzz run): an accession number or order number longer than
    its column failed the transaction on PostgreSQL (DataError: AE "internal error", a resend for
    ever). It is refused for what it is (AE, ERR 102, with its location), on any database."""
    listener = start_listener()
    order = sample("orm_o01_nw_v23.hl7")
    for long in (order.replace(b"|ACC1001|", b"|" + b"A" * 65 + b"|"), order.replace(b"PL1001^RIS", b"P" * 200 + b"^RIS")):
        (answer,) = send(listener.port, long)
        assert segment(answer, "MSA")[1] == "AE"
        assert "102" in segment(answer, "ERR")[1]
        assert "longer than" in segment(answer, "MSA")[3]
    (good,) = send(listener.port, order)
    assert segment(good, "MSA")[1] == "AA"


def test_an_order_control_that_is_no_code_is_refused(start_listener: Callable[..., Listener]) -> None:
    """Issue 18 (the fault harness's full fuzz run): ORC-1 "NWIPL1001" (a lost field separator) failed
    the orders table's two-character column on PostgreSQL: AE "internal error", resent for ever."""
    listener = start_listener()
    (answer,) = send(listener.port, sample("orm_o01_nw_v23.hl7").replace(b"ORC|NW|PL1001", b"ORC|NWPL1001", 1))
    assert segment(answer, "MSA")[1] == "AE"
    assert "103" in segment(answer, "ERR")[1] and "table 0119" in segment(answer, "MSA")[3]
