"""Routing and HL7 orders: a study whose order was cancelled before it arrived is not routed."""

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from audit.log import trail
from integration.hl7v2 import parse
from hl7_listener.intake import apply
from hl7_listener.message_types import map_message
from integration.messages import InstanceRef, StudyReady
from integration.orders import skip_cancelled
from integration.router import route
from storage.config import StorageSettings
from storage.db import make_engine, migrate, session_scope
from storage.objects import make_object_store
from storage.tables import InferenceJob, Order
from tests.mllp_peers import sample


def _study(accession: str, patient_id: str = "9RG1") -> StudyReady:
    return StudyReady(
        correlation_id="c-1",
        study_uid="1.2.3.4",
        revision=1,
        reason="quiet-period",
        patient_id=patient_id,
        accession_number=accession,
        last_received_at=datetime.now(UTC),
        instances=[
            InstanceRef(
                series_uid="1.2.3.4.1",
                sop_uid="1.2.3.4.1.1",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
                modality="CR",
                body_part="CHEST",
                object_key="dicom/x",
            )
        ],
    )


def test_cancelled_order_stops_routing_and_says_why(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        for name in ("orm_o01_nw_v23.hl7", "orm_o01_ca_v23.hl7"):
            apply(session, map_message(parse(sample(name))), message_id=name)
    assert route(engine, make_object_store(StorageSettings()), _study("ACC1001")) == []
    with session_scope(engine) as session:
        assert session.scalars(select(InferenceJob)).all() == []
        assert session.scalars(select(Order)).one().study_uid == "1.2.3.4"
        reasons = [r.detail.get("reason") for r in trail(session, correlation_id="c-1")]
    assert reasons == ["order cancelled"]
    # Another patient's study with the same accession number is not this order's.
    other = _study("ACC1001", patient_id="SOMEONE-ELSE").model_copy(update={"study_uid": "1.2.3.5"})
    assert skip_cancelled(engine, other) is False
    engine.dispose()
