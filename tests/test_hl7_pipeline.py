"""End to end over HL7 v2 on the real local stack: an order by ORM^O01, the study by C-STORE, the
result back as a DiagnosticReport based on the order and as an ORU^R01 to an MLLP destination;
and a listener killed between storing a message and acknowledging it."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import func, select

from doctorai.stack import engine_env, http_ok
from storage.db import make_engine, session_scope
from storage.tables.audit import AuditEvent
from storage.tables.fhir import FhirResourceVersion
from storage.tables.hl7 import Hl7Message
from storage.tables.outbound import Delivery
from storage.tables.pipeline import OutboxEvent
from tests.conftest import EngineRun
from tests.mllp_peers import AckDroppingProxy, read_ack, receiver, sample, segment, send, wait_for
from tests.test_pipeline import cli_token, storescu, wait_for_reports

ACCESSION = "ACC-E2E-1"


def _doctorai(run: EngineRun, *args: str) -> str:
    # `python -m doctorai.cli` is the `doctorai` command, run from this checkout.
    env = {**os.environ, **engine_env(run.config)}
    argv = [sys.executable, "-m", "doctorai.cli", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=True).stdout


@pytest.mark.stack
def test_order_then_study_yields_report_based_on_it_and_an_oru(engine_run: EngineRun, tmp_path: Path) -> None:
    ds = pydicom.dcmread(Path(str(get_testdata_file("RG1_UNCR.dcm"))))
    ds.AccessionNumber = ACCESSION
    study = tmp_path / "rg1-ordered.dcm"
    ds.save_as(study)
    order = sample("orm_o01_nw_v23.hl7").replace(b"ACC1001", ACCESSION.encode())
    db = make_engine(engine_run.config.storage_settings().resolved_database_url())

    def count(table: type, *where: object) -> int:
        with session_scope(db) as session:
            return session.scalar(select(func.count()).select_from(table).where(*where)) or 0  # type: ignore[arg-type]

    with receiver() as ehr:
        assert "destination 1 EHR" in _doctorai(engine_run, "destinations", "add-mllp", "EHR", "127.0.0.1", str(ehr.port))
        engine_run.start()
        mllp_port = engine_run.config.ports.mllp
        (ack,) = send(mllp_port, order)
        assert segment(ack, "MSA")[1:3] == ["AA", "ORM0001"]

        storescu(engine_run, study)
        token = cli_token()
        report = wait_for_reports(engine_run, token)["entry"][0]["resource"]
        assert report["basedOn"][0]["reference"].startswith("ServiceRequest/sr-")

        wait_for(lambda: bool(ehr.received), timeout=120, what="the ORU^R01 at the destination")
        oru = ehr.received[0]
        assert segment(oru, "MSH")[8] == "ORU^R01^ORU_R01"
        assert segment(oru, "ORC")[2:4] == ["PL1001^RIS", "FL2001^PACS"]
        assert segment(oru, "OBR")[18] == ACCESSION
        wait_for(lambda: count(Delivery, Delivery.status == "sent") == 1, what="the delivery marked sent")
        assert "sent" in _doctorai(engine_run, "deliveries")

        # The listener dies after committing a message and before its ACK reached the sender.
        adt = sample("adt_a04_v23.hl7")
        proxy = AckDroppingProxy(mllp_port)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=60) as sender:
            sender.sendall(b"\x0b" + adt + b"\x1c\r")
            wait_for(lambda: count(Hl7Message, Hl7Message.control_id == "ADT0002") == 1, what="the message row")
            engine_run.supervisor.kill("mllp")
            assert read_ack(sender) == b""  # the connection ended without an ACK
        proxy.close()
        metrics_port = engine_run.config.ports.mllp_metrics
        engine_run.supervisor.start(
            "mllp", [sys.executable, "-m", "hl7_listener"], env=engine_env(engine_run.config),
            ready=lambda: http_ok(f"http://127.0.0.1:{metrics_port}/metrics"),
        )
        (again,) = send(mllp_port, adt)  # the sender's retry
        assert segment(again, "MSA")[1:3] == ["AA", "ADT0002"]
    message_id = _doctorai(engine_run, "hl7", "unmapped", _message_id(db, "ORM0001"))
    assert '"ZDS[1]-1.1": "1.2.3.4.5.6"' in message_id
    assert count(Hl7Message, Hl7Message.control_id == "ADT0002") == 1
    assert count(FhirResourceVersion, FhirResourceVersion.resource_id == "PAT0002") == 1
    assert count(OutboxEvent, OutboxEvent.topic == "hl7.received") == 2  # the order and the ADT, once each
    assert count(AuditEvent, AuditEvent.subtype == "hl7-accepted") == 3  # order, ADT, ADT's duplicate
    assert count(AuditEvent, AuditEvent.subtype == "hl7-sent") == 1
    db.dispose()


def _message_id(db: object, control_id: str) -> str:
    with session_scope(db) as session:  # type: ignore[arg-type]
        return session.scalars(select(Hl7Message.id).where(Hl7Message.control_id == control_id)).one()
