"""DICOM destinations: forwards against real Storage SCPs on loopback, with instances in the local S3 store."""

import ssl
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from prometheus_client import REGISTRY
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom.dsutils import split_dataset
from sqlalchemy import Engine, select

from integration.config import IntegrationSettings
from integration.outbound import dicom
from integration.outbound.echo import echo
from doctorai.stack import StackConfig, free_ports
from storage.db import session_scope
from storage.destinations import add_destination
from storage.forwards import ForwardItem, forward_instances, list_forwards, queue_forward
from storage.objects import ObjectStore, make_object_store
from storage.tables.audit import AuditEvent
from tests.dicom_peers import StoreScp, store_scp
from tests.mllp_peers import wait_for
from tests.senders import fast, sending

FILES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm")  # two Explicit VR Little Endian, one JPEG 2000


def _settings(**overrides: float) -> IntegrationSettings:
    values = {"outbound_max_attempts": 5, "outbound_circuit_failures": 100, "outbound_circuit_cool_down_seconds": 0.5}
    return fast(**{**values, **overrides})


@pytest.fixture
def objects(services: StackConfig) -> ObjectStore:
    store = make_object_store(services.storage_settings())
    store.ensure_bucket()
    return store


@pytest.fixture
def study(objects: ObjectStore) -> dict[str, Path]:
    """The test files stored under keys of their own: object key -> the original file."""
    prefix = f"forward-test/{uuid.uuid4()}"
    files = {f"{prefix}/{name}": Path(str(get_testdata_file(name))) for name in FILES}
    for key, path in files.items():
        objects.put_file(key, path)
    return files


def _items(study: dict[str, Path]) -> list[ForwardItem]:
    out = []
    for key, path in study.items():
        ds = dcmread(path, stop_before_pixels=True)
        out.append(ForwardItem(str(ds.SOPInstanceUID), key, str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
    return out


def _destination(engine: Engine, name: str, port: int) -> int:
    with session_scope(engine) as session:
        row = add_destination(
            session, name=name, kind="dicom", host="127.0.0.1", port=port, options={"ae_title": "STORESCP"}
        )
        return row.id


def _queue(engine: Engine, destination_id: int, study: dict[str, Path], study_uid: str) -> None:
    with session_scope(engine) as session:
        queued = queue_forward(
            session,
            destination_id=destination_id,
            study_uid=study_uid,
            revision=1,
            correlation_id=f"corr-{study_uid}",
            rule="to-pacs",
            instances=_items(study),
        )
        assert queued is not None


def _status(engine: Engine, destination_id: int) -> tuple[str, int, str]:
    with session_scope(engine) as session:
        (row,) = list_forwards(session, destination_id=destination_id)
        return row.status, row.attempts, row.last_error


def _audits(engine: Engine, name: str) -> list[tuple[str, dict[str, str]]]:
    with session_scope(engine) as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.subtype == "dicom-sent").order_by(AuditEvent.id))
        return [(r.outcome, r.detail) for r in rows if r.detail["destination"] == name]


def _run(engine: Engine, objects: ObjectStore, settings: IntegrationSettings, until: Callable[[], None]) -> None:
    """Run the engine for DICOM destinations until `until` (called in a thread) returns."""
    sending(engine, settings, {"dicom": dicom.transport(settings, objects)}, until)


def _finished(engine: Engine, destination_id: int) -> Callable[[], bool]:
    return lambda: _status(engine, destination_id)[0] in ("sent", "dead")


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("doctorai_destination_circuit_open", {"destination": name})


def test_every_instance_arrives_as_stored(engine: Engine, objects: ObjectStore, study: dict[str, Path]) -> None:
    with store_scp(StoreScp(free_ports().dicom)) as scp:
        target = _destination(engine, "pacs-exact", scp.port)
        _queue(engine, target, study, "1.2.826.0.1.1")
        _run(engine, objects, _settings(), lambda: wait_for(_finished(engine, target), what="the forward"))
    assert _status(engine, target) == ("sent", 1, "")
    assert set(scp.calls.values()) == {1}
    for item in _items(study):
        got = scp.received[item.sop_uid]
        original = study[item.object_key]
        # The stored syntax was offered first and taken: the data set went as it was stored, byte
        # for byte (the compressed JPEG 2000 one too: no decoding, no re-encoding).
        assert got.transfer_syntax == item.transfer_syntax_uid
        _, offset = split_dataset(original)
        assert got.dataset_bytes == original.read_bytes()[offset:]
        assert got.pixel_data == dcmread(original).PixelData
    with session_scope(engine) as session:
        forward_id = list_forwards(session, destination_id=target)[0].id
        assert {i.status for i in forward_instances(session, forward_id=forward_id)} == {"sent"}
    ((outcome, detail),) = _audits(engine, "pacs-exact")
    assert outcome == "0"
    assert (detail["status"], detail["instances_sent"], detail["instances_failed"]) == ("sent", "3", "0")
    sent = REGISTRY.get_sample_value("doctorai_forwarded_instances_total", {"destination": "pacs-exact"})
    assert sent == 3


def test_uncompressed_instances_are_re_encoded_but_compressed_ones_never(
    engine: Engine, objects: ObjectStore, study: dict[str, Path]
) -> None:
    # An SCP that takes Implicit VR Little Endian only (the default every SCP must accept, PS3.5 A.1).
    with store_scp(StoreScp(free_ports().dicom, syntaxes=[ImplicitVRLittleEndian])) as scp:
        target = _destination(engine, "pacs-implicit", scp.port)
        _queue(engine, target, study, "1.2.826.0.1.2")
        settings = _settings(outbound_max_attempts=2)
        _run(engine, objects, settings, lambda: wait_for(_finished(engine, target), what="the forward"))
    status, attempts, error = _status(engine, target)
    assert (status, attempts) == ("dead", 2)
    assert "not transcoded" in error
    compressed = next(i for i in _items(study) if i.object_key.endswith("JPEG2000.dcm"))
    assert compressed.sop_uid not in scp.received
    for item in (i for i in _items(study) if i != compressed):
        got = scp.received[item.sop_uid]
        assert got.transfer_syntax == ImplicitVRLittleEndian
        assert got.pixel_data == dcmread(study[item.object_key]).PixelData
        assert scp.calls[item.sop_uid] == 1  # accepted once, never sent again
    assert [o for o, _ in _audits(engine, "pacs-implicit")] == ["4", "8"]


def test_a_partial_failure_retries_only_the_refused_instances(
    engine: Engine, objects: ObjectStore, study: dict[str, Path]
) -> None:
    refused = next(i.sop_uid for i in _items(study) if i.object_key.endswith("MR_small.dcm"))

    def out_of_resources_once(sop_uid: str, seen: int) -> int:
        return 0xA700 if sop_uid == refused and seen == 0 else 0x0000

    with store_scp(StoreScp(free_ports().dicom, policy=out_of_resources_once)) as scp:
        target = _destination(engine, "pacs-flaky", scp.port)
        _queue(engine, target, study, "1.2.826.0.1.3")
        _run(engine, objects, _settings(), lambda: wait_for(_finished(engine, target), what="the forward"))
    assert _status(engine, target) == ("sent", 2, "")
    assert scp.calls[refused] == 2
    assert sorted(scp.calls.values()) == [1, 1, 2]  # the accepted ones were not sent again
    audits = _audits(engine, "pacs-flaky")
    assert [o for o, _ in audits] == ["4", "0"]
    assert "0xA700" in audits[0][1]["error"]
    assert audits[0][1]["instances_failed"] == "1"


def test_a_down_destination_completes_when_back_and_delays_nobody(
    engine: Engine, objects: ObjectStore, study: dict[str, Path]
) -> None:
    down_port = free_ports().dicom
    settings = _settings(outbound_max_attempts=1000, outbound_circuit_failures=3, outbound_circuit_cool_down_seconds=0.3)
    with store_scp(StoreScp(free_ports().dicom)) as healthy:
        down = _destination(engine, "pacs-down", down_port)
        up = _destination(engine, "pacs-up", healthy.port)
        _queue(engine, down, study, "1.2.826.0.1.4")  # queued first, and still nobody waits for it
        _queue(engine, up, study, "1.2.826.0.1.4")
        back = StoreScp(down_port)
        seen: list[float | None] = []

        def scenario() -> None:
            wait_for(_finished(engine, up), what="the healthy destination's forward")
            # The healthy destination is done while the other one has never been reachable.
            assert _status(engine, down)[0] == "pending"
            assert not back.calls
            wait_for(lambda: _gauge("pacs-down") == 1, what="the circuit to open")
            seen.append(_gauge("pacs-down"))
            with store_scp(back):
                wait_for(_finished(engine, down), what="the forward after the destination came back")
            seen.append(_gauge("pacs-down"))

        _run(engine, objects, settings, scenario)
    assert _status(engine, up) == ("sent", 1, "")
    status, attempts, _ = _status(engine, down)
    assert status == "sent" and attempts >= settings.outbound_circuit_failures + 1
    assert seen == [1, 0]
    assert set(back.received) == {i.sop_uid for i in _items(study)}
    outcomes = [o for o, _ in _audits(engine, "pacs-down")]
    assert outcomes[-1] == "0" and set(outcomes[:-1]) == {"4"}
    assert "cannot connect" in _audits(engine, "pacs-down")[0][1]["error"]


def test_a_forward_is_dead_after_the_last_attempt(engine: Engine, objects: ObjectStore, study: dict[str, Path]) -> None:
    target = _destination(engine, "pacs-gone", free_ports().dicom)  # nothing ever listens there
    _queue(engine, target, study, "1.2.826.0.1.5")
    _run(engine, objects, _settings(outbound_max_attempts=3), lambda: wait_for(_finished(engine, target), what="dead"))
    status, attempts, error = _status(engine, target)
    assert (status, attempts) == ("dead", 3)
    assert "cannot connect" in error
    assert [o for o, _ in _audits(engine, "pacs-gone")] == ["4", "4", "8"]
    dead = REGISTRY.get_sample_value("doctorai_forwards_total", {"destination": "pacs-gone", "outcome": "dead"})
    assert dead == 1


def test_a_tls_destination_gets_the_study_over_mutual_tls(
    engine: Engine, objects: ObjectStore, study: dict[str, Path], tmp_path: Path
) -> None:
    """A destination with `tls` and its CA: the forwarder verifies the SCP's certificate and
    presents its own client certificate, which the SCP requires (PS3.15 B.9); echo works the same way."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("doctorai.example")
    ca_file, cert_file = tmp_path / "ca.pem", tmp_path / "client.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    with store_scp(StoreScp(free_ports().dicom, tls=context)) as scp:
        with session_scope(engine) as session:
            row = add_destination(
                session,
                name="pacs-tls",
                kind="dicom",
                host="127.0.0.1",
                port=scp.port,
                tls=True,
                options={"ae_title": "STORESCP", "ca_file": str(ca_file), "cert_file": str(cert_file)},
            )
            target = row.id
            assert echo(row, timeout=10).ok
            # Without our client certificate the SCP refuses the handshake: the answer says so.
            row.options = {"ae_title": "STORESCP", "ca_file": str(ca_file)}
            assert not echo(row, timeout=10).ok
            row.options = {"ae_title": "STORESCP", "ca_file": str(ca_file), "cert_file": str(cert_file)}
        _queue(engine, target, study, "1.2.826.0.1.9")
        _run(engine, objects, _settings(), lambda: wait_for(_finished(engine, target), what="the TLS forward"))
    assert _status(engine, target) == ("sent", 1, "")
    for item in _items(study):
        assert scp.received[item.sop_uid].pixel_data == dcmread(study[item.object_key]).PixelData
