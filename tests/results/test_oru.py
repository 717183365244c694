"""Reports out as ORU^R01: based on the HL7 order, strictly valid, queued once per MLLP destination."""

from collections.abc import Callable

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from sqlalchemy import Engine, select

from integration.config import Hl7Identity
from results import consumer
from storage.fhir import store
from integration.hl7v2 import parse
from hl7_listener.intake import apply
from hl7_listener.message_types import map_message
from integration.messages import InferenceResult
from storage.db import session_scope
from storage.deliveries import deliveries
from storage.destinations import add_destination
from storage.instances import ReceivedInstance
from storage.tables.hl7 import Order
from tests.mllp_peers import sample, segment

EXPORTS = consumer.Exports(identity=Hl7Identity(), fhir_base_url="/fhir")

MakeJob = Callable[..., InferenceResult]
# The RG1 sample's AccessionNumber (0008,0050).
RG1_ACCESSION = b"exam Number"


def _order(engine: Engine, name: str = "orm_o01_nw_v23.hl7") -> None:
    raw = sample(name).replace(b"ACC1001", RG1_ACCESSION)
    with session_scope(engine) as session:
        apply(session, map_message(parse(raw)), message_id=f"m-{name}")


def test_report_of_an_ordered_study_goes_out_with_the_order_numbers(
    engine: Engine, indexed: ReceivedInstance, make_job: MakeJob
) -> None:
    _order(engine)  # the order first, the study's report after
    with session_scope(engine) as session:
        add_destination(session, name="EHR", kind="mllp", host="127.0.0.1", port=1)
        add_destination(session, name="RIS", kind="mllp", host="127.0.0.1", port=2)
    result = make_job()
    with session_scope(engine) as session:
        report_id = consumer.apply_result(session, result, EXPORTS)
        assert report_id is not None
        report = store.read(session, "DiagnosticReport", report_id)
        order = session.scalars(select(Order)).one()
        assert [r.reference for r in report.basedOn] == [f"ServiceRequest/{order.service_request_id}"]  # type: ignore[attr-defined]
        assert order.study_uid == indexed.study_uid
    with session_scope(engine) as session:
        assert consumer.apply_result(session, result, EXPORTS) is None  # a replay queues nothing new
        queued = deliveries(session)
    assert len(queued) == 2 and {d.status for d in queued} == {"pending"}
    payload = queued[0].payload.encode()
    message = parse_message(payload.decode(), validation_level=VALIDATION_LEVEL.STRICT)
    assert message.validate()
    assert segment(payload, "MSH")[8] == "ORU^R01^ORU_R01" and segment(payload, "MSH")[11] == "2.5.1"
    assert segment(payload, "ORC")[2:4] == ["PL1001^RIS", "FL2001^PACS"]
    assert segment(payload, "OBR")[2:4] == ["PL1001^RIS", "FL2001^PACS"]
    assert segment(payload, "PID")[3].startswith("9RG1^^^HOSP^MR")
    # OBR-7 the study's date (the report's effectiveDateTime), OBR-22 when the report was issued.
    assert segment(payload, "OBR")[7] == "20040826" and str(report.effectiveDateTime) == "2004-08-26"  # type: ignore[attr-defined]
    assert segment(payload, "OBR")[22] == report.issued.strftime("%Y%m%d%H%M%S+0000")  # type: ignore[attr-defined]
    obx = [line.split("|") for line in payload.decode().split("\r") if line.startswith("OBX|")]
    assert obx[0][2] == "CWE" and obx[0][3].startswith("233604007^") and obx[0][5].startswith("260373001^")
    assert obx[0][8] == "A" and obx[0][11] == "P"  # abnormal flag, preliminary (OBX-8, OBX-11)
    assert obx[0][14] == obx[1][14] == "20040826"  # OBX-14, the observation's date: the study's
    assert obx[1][2] == "NM" and obx[1][4] == obx[0][4] and float(obx[1][5]) == 0.87 and obx[1][11] == "P"
    assert obx[-1][3].startswith("NFCU^Not for clinical use") and "NOT FOR CLINICAL USE" in obx[-1][5]


def test_order_arriving_after_the_report_is_added_to_it(
    engine: Engine, indexed: ReceivedInstance, make_job: MakeJob
) -> None:
    with session_scope(engine) as session:
        report_id = consumer.apply_result(session, make_job(clinical_use=True), EXPORTS)
        assert report_id is not None
    _order(engine)
    with session_scope(engine) as session:
        report = store.read(session, "DiagnosticReport", report_id)
        assert report.basedOn and report.basedOn[0].reference.startswith("ServiceRequest/sr-")  # type: ignore[attr-defined]
        assert deliveries(session) == []  # no destination configured, nothing queued
