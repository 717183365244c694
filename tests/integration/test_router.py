"""The router on SQLite and PostgreSQL: rules from the database, jobs on the active version, hold,
drop, the dry run, reports with text to text models, and HL7 orders: a study whose order was
cancelled before it arrived is not routed."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from sqlalchemy import Engine, func, select

from audit.log import trail
from hl7_listener.intake import apply
from hl7_listener.message_types import map_message
from integration.errors import StudyNotFound
from integration.hl7v2 import parse
from integration.messages import FhirReceived, Hl7Received, InstanceRef, StudyReady
from integration.router import dry_run, route, route_hl7, route_report, skip_cancelled
from integration.rules import DEFAULT_RULES, Match, Rule, RunModel, TagMatch, load_rules, save
from doctorai.stack import StackConfig
from storage.config import StorageSettings
from storage.db import make_engine, migrate, session_scope
from storage.destinations import add_destination
from storage.forwards import forward_instances, list_forwards
from storage.objects import ObjectStore, dicom_key, make_object_store
from storage.instances import correlation_id_for_study, record_instance
from storage.model_packages import activate_model_package, add_model_package
from storage.tables.audit import AuditEvent
from storage.tables.base import Base
from storage.tables.fhir import FhirResource
from storage.tables.hl7 import Order
from storage.tables.index import Study
from storage.tables.pipeline import InferenceJob, OutboxEvent
from tests.mllp_peers import sample
from tests.studies import received

STUDY = "1.2.826.0.1.3680043.8.498.1"
# Rules without tag criteria never read the object store: this one is never reached.
UNREACHED = make_object_store(StorageSettings())


def _index_study(db: Engine, *, called_ae: str = "DOCTORAI", accession: str = "") -> None:
    item = received(
        study_uid=STUDY,
        series_uid=STUDY + ".1",
        sop_uid=STUDY + ".1.1",
        accession_number=accession,
        study_date="",
        study_description="",
        object_key="k",
        size=1,
        sha256="0" * 64,
        source_address="10.0.0.7",
        called_ae=called_ae,
    )
    with session_scope(db) as session:
        record_instance(session, item=item)


def _register(db: Engine, name: str, *versions: str, active: str) -> None:
    with session_scope(db) as session:
        for version in versions:
            row = add_model_package(session, name=name, version=version, framework="keras", manifest="{}")
            if version == active:
                activate_model_package(session, row=row)


def _ready(db: Engine, revision: int = 1, reason: str = "quiet-period") -> StudyReady:
    """Mark the indexed study ready at `revision`, as the listener does, and give its event."""
    with session_scope(db) as session:
        study = session.get(Study, STUDY)
        assert study is not None
        study.status, study.revision, study.ready_reason = "ready", revision, reason
    return StudyReady.model_validate(
        {
            "correlation_id": correlation_id_for_study(STUDY),
            "study_uid": STUDY,
            "revision": revision,
            "reason": reason,
            "calling_ae": "PACS",
            "last_received_at": datetime.now(UTC),
            "instances": [
                InstanceRef(
                    series_uid=STUDY + ".1",
                    sop_uid=STUDY + ".1.1",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
                    modality="CR",
                    body_part="CHEST",
                    object_key="k",
                )
            ],
        }
    )


def _save(db: Engine, rule: Rule, rule_id: int | None = None) -> int:
    with session_scope(db) as session:
        return save(session, rule, rule_id)


def _status(db: Engine) -> str:
    with session_scope(db) as session:
        study = session.get(Study, STUDY)
        assert study is not None
        return study.status


def _routed(db: Engine) -> list[dict[str, str]]:
    with session_scope(db) as session:
        return [
            e.detail for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id)) if e.subtype == "study-routed"
        ]


def _jobs(db: Engine) -> list[tuple[str, int]]:
    with session_scope(db) as session:
        return [(j.model, j.revision) for j in session.scalars(select(InferenceJob).order_by(InferenceJob.revision))]


def test_the_migration_seeds_the_default_rules(db: Engine) -> None:
    with session_scope(db) as session:
        stored = [rule for _, rule in load_rules(session)]
    assert sorted(stored, key=lambda r: r.name) == sorted(DEFAULT_RULES, key=lambda r: r.name)


def test_jobs_use_the_active_version_and_unregistered_models_get_none(db: Engine) -> None:
    _index_study(db)
    assert route(db, UNREACHED, _ready(db, 1)) == []
    assert "no active version" in [d.get("reason") for d in _routed(db)]

    _register(db, "chest-xray-pneumonia", "0.3.0", "0.4.0", active="0.4.0")
    [request] = route(db, UNREACHED, _ready(db, 2))
    assert request.model_version == "0.4.0"
    assert [i.sop_uid for i in request.inputs] == [STUDY + ".1.1"]
    assert route(db, UNREACHED, _ready(db, 2)) == []  # replayed: the job exists
    assert _jobs(db) == [("chest-xray-pneumonia", 2)]
    assert _routed(db)[-1]["rule"] == "chest-radiographs-to-pneumonia-model"


def test_rules_come_from_the_database(db: Engine) -> None:
    _index_study(db, called_ae="DOCTORAI_AI")
    _register(db, "chest-xray-pneumonia", "1", active="1")
    _register(db, "other", "1", active="1")
    with session_scope(db) as session:
        [(chest_id, chest)] = [(i, r) for i, r in load_rules(session) if r.name.startswith("chest")]
    _save(db, chest.model_copy(update={"enabled": False}), chest_id)
    _save(db, Rule(name="ai-ae", match=Match(called_aes=("doctorai_ai",)), run=(RunModel(model="other"),)))
    [request] = route(db, UNREACHED, _ready(db))
    assert request.model == "other"


def test_a_hold_rule_holds_the_study_until_it_is_released(db: Engine) -> None:
    _index_study(db)
    _register(db, "chest-xray-pneumonia", "1", active="1")
    _save(db, Rule(name="hold-pacs", priority=1, match=Match(calling_aes=("PACS",)), hold=True))
    assert route(db, UNREACHED, _ready(db, 1)) == []
    assert _status(db) == "held"
    assert _routed(db)[-1] == {"revision": "1", "model": "", "reason": "held", "rule": "hold-pacs"}
    assert _jobs(db) == []

    [request] = route(db, UNREACHED, _ready(db, 2, reason="manual-release"))
    assert request.model == "chest-xray-pneumonia" and _status(db) == "ready"


def test_a_drop_rule_drops_the_study_and_nothing_runs(db: Engine) -> None:
    _index_study(db)
    _register(db, "chest-xray-pneumonia", "1", active="1")
    _save(db, Rule(name="drop-lab", priority=500, match=Match(source_addresses=("10.0.0.0/24",)), drop=True))
    assert route(db, UNREACHED, _ready(db)) == []
    assert _status(db) == "dropped" and _jobs(db) == []
    assert _routed(db)[-1] == {"revision": "1", "model": "", "reason": "dropped", "rule": "drop-lab"}
    with session_scope(db) as session:
        assert session.scalars(select(OutboxEvent)).all() == []


def test_a_study_not_in_the_index_is_audited_not_routed(db: Engine) -> None:
    _index_study(db)
    event = _ready(db).model_copy(update={"study_uid": "9.9"})
    assert route(db, UNREACHED, event) == []
    assert _routed(db)[-1]["reason"] == "study not in the index"


def _row_counts(db: Engine) -> dict[str, int]:
    with session_scope(db) as session:
        return {t.name: session.scalar(select(func.count()).select_from(t)) or 0 for t in Base.metadata.sorted_tables}


def test_a_dry_run_answers_what_a_rule_would_do_and_changes_nothing(db: Engine) -> None:
    _index_study(db, accession="ACC7")
    _ready(db)
    now = datetime.now(UTC)
    with session_scope(db) as session:
        session.add(
            Order(
                service_request_id="sr1",
                accession_number="ACC7",
                patient_id="P1",
                status="active",
                message_id="m",
                created_at=now,
                updated_at=now,
                study_uid=None,
            )
        )
    draft = Rule(
        name="draft", enabled=False, match=Match(has_order=True), run=(RunModel(model="m"),), forward=("pacs",)
    )
    before = _row_counts(db)
    plan = dry_run(db, UNREACHED, draft, study_uid=STUDY)
    assert plan.model_dump(mode="json") == {
        "study_uid": STUDY,
        "runs": [{"model": "m", "rule": "draft", "series_uids": [STUDY + ".1"], "instance_count": 1}],
        "forwards": [{"destination": "pacs", "rule": "draft", "instance_count": 1}],
        "held_by": "",
        "dropped_by": "",
        "matched": ["draft"],
    }
    hold = dry_run(db, UNREACHED, Rule(name="h", hold=True), study_uid=STUDY)
    assert hold.held_by == "h"
    assert _row_counts(db) == before
    with session_scope(db) as session:
        order = session.get(Order, "sr1")
        assert order is not None and order.study_uid is None  # the link routing would make is not made
    with pytest.raises(StudyNotFound):
        dry_run(db, UNREACHED, draft, study_uid="9.9")


def test_tag_rules_read_the_first_header_of_each_series(db: Engine, services: StackConfig) -> None:
    store: ObjectStore = make_object_store(services.storage_settings())
    store.ensure_bucket()
    path = get_testdata_file("CT_small.dcm")
    assert isinstance(path, str)
    ds = dcmread(path)
    key = dicom_key(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    with open(path, "rb") as f:
        store.put_bytes(key, f.read())
    item = received(
        study_uid=ds.StudyInstanceUID, series_uid=ds.SeriesInstanceUID, sop_uid=ds.SOPInstanceUID,
        sop_class_uid=ds.SOPClassUID, transfer_syntax_uid=ds.file_meta.TransferSyntaxUID, patient_id="",
        accession_number="", study_date="", study_description="", modality="CT", body_part="", object_key=key,
        size=1, sha256="0" * 64, source_address="",
    )  # fmt: skip
    with session_scope(db) as session:
        record_instance(session, item=item)
    sex = str(ds.PatientSex)
    for pattern, expected in ((f"^{sex}$", ["m"]), ("^X$", [])):
        rule = Rule(
            name="t", match=Match(tags=(TagMatch(tag="(0010,0040)", pattern=pattern),)), run=(RunModel(model="m"),)
        )
        plan = dry_run(db, store, rule, study_uid=ds.StudyInstanceUID)
        assert [r.model for r in plan.runs] == expected


def _store_report(db: Engine, report_id: str, body: dict[str, object]) -> None:
    with session_scope(db) as session:
        session.add(
            FhirResource(
                resource_type="DiagnosticReport",
                resource_id=report_id,
                version_id=1,
                last_updated=datetime.now(UTC),
                content=json.dumps(body),
            )
        )


def test_a_report_with_a_conclusion_is_queued_for_triage_with_its_text(db: Engine) -> None:
    _index_study(db)
    _register(db, "report-triage", "0.1.0", active="0.1.0")
    base = {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"text": "CXR"},
        "imagingStudy": [{"reference": f"ImagingStudy/{STUDY}"}],
    }
    _store_report(db, "r1", {**base, "id": "r1", "conclusion": "Large right pneumothorax."})
    _store_report(db, "r2", {**base, "id": "r2"})  # no conclusion
    _store_report(
        db,
        "r3",
        {**base, "id": "r3", "conclusion": "AI says", "identifier": [{"system": "urn:doctorai:job", "value": "j"}]},
    )
    _store_report(
        db, "r4", {**base, "id": "r4", "conclusion": "No study", "imagingStudy": [{"reference": "ImagingStudy/9.9"}]}
    )

    def received(report_id: str) -> FhirReceived:
        return FhirReceived(
            correlation_id="c",
            resource_type="DiagnosticReport",
            resource_id=report_id,
            version_id=1,
            interaction="create",
        )

    [request] = route_report(db, received("r1"))
    assert request.model == "report-triage" and request.inputs == []
    assert [(t.ref, t.text) for t in request.texts] == [("DiagnosticReport/r1", "Large right pneumothorax.")]
    for other in ("r2", "r3", "r4", "missing"):
        assert route_report(db, received(other)) == []
    assert route_report(db, received("r1")) == []  # replayed
    with session_scope(db) as session:
        topics = [e.topic for e in session.scalars(select(OutboxEvent))]
    assert topics == ["inference.request.report-triage"]


def _store(db: Engine, resource_type: str, resource_id: str, body: dict[str, object]) -> None:
    with session_scope(db) as session:
        session.add(
            FhirResource(
                resource_type=resource_type,
                resource_id=resource_id,
                version_id=1,
                last_updated=datetime.now(UTC),
                content=json.dumps({"resourceType": resource_type, "id": resource_id, **body}),
            )
        )


def test_an_oru_reports_text_observations_are_triaged_through_its_order(db: Engine) -> None:
    """An ORU^R01 from another system: no conclusion and no ImagingStudy reference, but its order is
    linked to the study and its TX OBX segments are Observation.valueString."""
    _index_study(db, accession="ACC9")
    _register(db, "report-triage", "0.1.0", active="0.1.0")
    now = datetime.now(UTC)
    with session_scope(db) as session:
        session.add(
            Order(
                service_request_id="sr-9", accession_number="ACC9", patient_id="P1", status="active",
                study_uid=STUDY, message_id="m", created_at=now, updated_at=now,
            )
        )
    _store(db, "Observation", "o1", {"status": "final", "code": {"text": "impression"}, "valueString": "Right pneumothorax."})
    _store(db, "Observation", "o2", {"status": "final", "code": {"text": "size"}, "valueQuantity": {"value": 3}})
    _store(db, "Observation", "o3", {"status": "final", "code": {"text": "advice"}, "valueString": "Call the ward."})
    _store(
        db,
        "DiagnosticReport",
        "v2dr-1",
        {
            "status": "final",
            "code": {"text": "CXR"},
            "basedOn": [{"reference": "ServiceRequest/sr-9"}],
            "result": [{"reference": f"Observation/o{n}"} for n in (1, 2, 3)],
        },
    )
    message = Hl7Received(
        correlation_id="c", message_id="m", sender_application="RIS", sender_facility="HOSP", control_id="1",
        message_type="ORU", trigger_event="R01", version="2.5.1", object_key="k",
        resources=["Patient/P1", "Observation/o1", "DiagnosticReport/v2dr-1"],
    )
    [request] = route_hl7(db, message)
    assert request.study_uid == STUDY and request.revision == 1
    assert [(t.ref, t.text) for t in request.texts] == [("DiagnosticReport/v2dr-1", "Right pneumothorax.\nCall the ward.")]
    assert route_hl7(db, message) == []  # delivered again: the job exists


def test_a_forward_rule_queues_the_study_for_each_dicom_destination(db: Engine) -> None:
    """Known enabled DICOM destinations get a forward of the matching study's instances; an unknown,
    a disabled and a non-DICOM destination are audited with the reason; a replay queues nothing."""
    _index_study(db)
    with session_scope(db) as session:
        archive = add_destination(
            session, name="archive", kind="dicom", host="127.0.0.1", port=11112, options={"ae_title": "ARCHIVE"}
        )
        add_destination(session, name="off", kind="dicom", host="127.0.0.1", port=11113).enabled = False
        add_destination(session, name="ehr", kind="mllp", host="127.0.0.1", port=2575)
        archive_id = archive.id
    _save(db, Rule(name="to-archive", match=Match(modalities=("CR",)), forward=("archive", "off", "ehr", "nowhere")))
    assert route(db, UNREACHED, _ready(db)) == []
    with session_scope(db) as session:
        [forward] = list_forwards(session)
        assert (forward.destination_id, forward.study_uid, forward.revision, forward.rule) == (
            archive_id, STUDY, 1, "to-archive"
        )
        [item] = forward_instances(session, forward_id=forward.id)
        assert (item.sop_uid, item.transfer_syntax_uid, item.status) == (STUDY + ".1.1", "1.2.840.10008.1.2.1", "pending")
    reasons = {d.get("destination"): d.get("reason", d.get("forward")) for d in _routed(db) if d.get("destination")}
    assert reasons == {
        "archive": "queued",
        "off": "destination disabled",
        "ehr": "mllp destination",
        "nowhere": "unknown destination",
    }
    route(db, UNREACHED, _ready(db))  # the same event again
    with session_scope(db) as session:
        assert len(list_forwards(session)) == 1


def _ordered_study(accession: str, patient_id: str = "9RG1") -> StudyReady:
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
    assert route(engine, make_object_store(StorageSettings()), _ordered_study("ACC1001")) == []
    with session_scope(engine) as session:
        assert session.scalars(select(InferenceJob)).all() == []
        assert session.scalars(select(Order)).one().study_uid == "1.2.3.4"
        reasons = [r.detail.get("reason") for r in trail(session, correlation_id="c-1")]
    assert reasons == ["order cancelled"]
    # Another patient's study with the same accession number is not this order's.
    other = _ordered_study("ACC1001", patient_id="SOMEONE-ELSE").model_copy(update={"study_uid": "1.2.3.5"})
    assert skip_cancelled(engine, other) is False
    engine.dispose()
