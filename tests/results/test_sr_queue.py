"""Results as DICOM SR: made by the results consumer with the report, sent by the forwarder to a real Storage SCP."""

import io
from collections.abc import Callable
from functools import partial

import highdicom as hd
import pytest
from pydicom.filereader import read_dataset
from sqlalchemy import Engine, select

from audit.records import REPORT_CREATED
from results import consumer
from results.sr import sr_uids
from integration.config import Hl7Identity
from integration.messages import InferenceResult
from integration.outbound import dicom
from doctorai.stack import free_ports
from storage.db import session_scope
from storage.destinations import add_destination
from storage.forwards import ForwardItem, forward_instances, list_forwards, queue_forward
from storage.objects import ObjectStore, dicom_key
from storage.instances import ReceivedInstance
from storage.tables.audit import AuditEvent
from tests.dicom_peers import StoreScp, store_scp
from tests.mllp_peers import wait_for
from tests.senders import FAST, sending

MakeJob = Callable[..., InferenceResult]


def _destination(engine: Engine, name: str, port: int, *, enabled: bool = True, **options: str) -> int:
    with session_scope(engine) as session:
        row = add_destination(
            session,
            name=name,
            kind="dicom",
            host="127.0.0.1",
            port=port,
            enabled=enabled,
            options={"ae_title": "STORESCP", **options},
        )
        return row.id


def _sent(engine: Engine, destination_id: int) -> bool:
    with session_scope(engine) as session:
        return {f.status for f in list_forwards(session, destination_id=destination_id)} == {"sent"}


def test_a_result_reaches_the_pacs_as_an_sr_in_its_study(
    engine: Engine, objects: ObjectStore, indexed: ReceivedInstance, make_job: MakeJob
) -> None:
    with store_scp(StoreScp(free_ports().dicom)) as scp:
        pacs = _destination(engine, "pacs", scp.port, results="sr")
        _destination(engine, "archive", 1)  # takes studies only
        disabled = _destination(engine, "off", 1, enabled=False, results="sr")
        with session_scope(engine) as session:
            # The study itself was forwarded to the PACS at this revision too: the two never collide.
            study = queue_forward(
                session,
                destination_id=pacs,
                study_uid=indexed.study_uid,
                revision=1,
                correlation_id="corr",
                rule="to-pacs",
                instances=[
                    ForwardItem(indexed.sop_uid, indexed.object_key, indexed.sop_class_uid, indexed.transfer_syntax_uid)
                ],
            )
            assert study is not None
            session.get_one(type(study), study.id).status = "sent"  # already delivered
        result = make_job()
        exports = consumer.Exports(identity=Hl7Identity(), fhir_base_url="/fhir", objects=objects)
        with session_scope(engine) as session:
            assert consumer.apply_result(session, result, exports) == result.job_id
        with session_scope(engine) as session:
            assert consumer.apply_result(session, result, exports) is None  # a replay queues nothing new

        series_uid, sop_uid = sr_uids(result.job_id)
        key = dicom_key(indexed.study_uid, series_uid, sop_uid)
        with session_scope(engine) as session:
            (queued,) = list_forwards(session, kind="result")
            assert (queued.destination_id, queued.job_id, queued.revision) == (pacs, result.job_id, 1)
            assert [f.kind for f in list_forwards(session, destination_id=pacs)] == ["result", "study"]
            assert list_forwards(session, destination_id=disabled) == []
            (item,) = forward_instances(session, forward_id=queued.id)
            assert (item.sop_uid, item.object_key) == (sop_uid, key)
            audit = session.scalars(
                select(AuditEvent).where(
                    AuditEvent.subtype == REPORT_CREATED.subtype, AuditEvent.entity_what == sop_uid
                )
            ).one()
            assert audit.outcome == "0" and audit.detail["destinations"] == "pacs"
        assert key in objects.list_keys(f"dicom/{indexed.study_uid}/{series_uid}/")

        until = partial(wait_for, lambda: _sent(engine, pacs), what="the SR forward")
        sending(engine, FAST, {"dicom": dicom.transport(FAST, objects)}, until)

    assert indexed.sop_uid not in scp.received  # the study's own forward was done; only the SR went
    got = scp.received[sop_uid]
    syntax = got.transfer_syntax
    ds = read_dataset(io.BytesIO(got.dataset_bytes), syntax.is_implicit_VR, syntax.is_little_endian)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    assert (ds.StudyInstanceUID, ds.PatientID, ds.SeriesInstanceUID) == (indexed.study_uid, "9RG1", series_uid)
    report = hd.sr.Comprehensive3DSR.from_dataset(ds).content
    assert isinstance(report, hd.sr.MeasurementReport)
    (group,) = report.get_image_measurement_groups()
    assert group.finding_type is not None and group.finding_type.value == "233604007"
    (probability,) = group.get_measurements()
    assert float(probability.value) == pytest.approx(0.87)
    with session_scope(engine) as session:
        attempts = list(session.scalars(select(AuditEvent).where(AuditEvent.subtype == "dicom-sent")))
    # A loaded machine may see the peer abort a first attempt: that one is audited as pending and
    # retried; exactly one attempt delivered it.
    (sent,) = [a for a in attempts if a.detail["status"] == "sent"]
    assert all(a.detail["status"] == "pending" and a.outcome != "0" for a in attempts if a is not sent)
    assert (sent.detail["kind"], sent.detail["job_id"]) == ("result", result.job_id)


def test_no_sr_forward_without_a_destination_that_takes_results(
    engine: Engine, objects: ObjectStore, indexed: ReceivedInstance, make_job: MakeJob
) -> None:
    _destination(engine, "archive", 1)
    result = make_job()
    exports = consumer.Exports(identity=Hl7Identity(), fhir_base_url="/fhir", objects=objects)
    with session_scope(engine) as session:
        assert consumer.apply_result(session, result, exports) == result.job_id
    with session_scope(engine) as session:
        assert list_forwards(session) == []
    # Issue 17: the SR is made for every report all the same, and joins the study (results/instances.py).
    series_uid, sop_uid = sr_uids(result.job_id)
    assert list(objects.list_keys(f"dicom/{indexed.study_uid}/{series_uid}/")) == [dicom_key(indexed.study_uid, series_uid, sop_uid)]
