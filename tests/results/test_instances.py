"""A result's SR and SEG join the study they describe, without opening a revision that would route it again."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from io import BytesIO

import numpy as np
import pydicom
from pydicom.uid import generate_uid
from sqlalchemy import Engine, func, select

from dicom_listener.stability import declare_ready
from inference import segmentations
from inference.packages import deepbet
from integration.messages import InferenceResult
from results import consumer
from results.sr import sr_uids
from storage.db import session_scope
from storage.instances import ReceivedInstance
from integration.config import Hl7Identity
from storage.objects import ObjectStore, dicom_key
from storage.tables.audit import AuditEvent
from storage.tables.index import Instance, InstanceVersion, Series, Study
from tests.inference.packages.test_deepbet import _slice

MakeJob = Callable[..., InferenceResult]


def _exports(objects: ObjectStore) -> consumer.Exports:
    """What the consumer's __main__ gives it: our HL7 identity, the FHIR base URL, the object store."""
    return consumer.Exports(identity=Hl7Identity(), fhir_base_url="/fhir", objects=objects)


def _study(engine: Engine, study_uid: str) -> tuple[str, int, datetime]:
    with session_scope(engine) as session:
        study = session.get_one(Study, study_uid)
        return study.status, study.revision, study.last_received_at


def test_every_report_stores_its_sr_in_the_study_without_routing_it_again(
    engine: Engine, objects: ObjectStore, indexed: ReceivedInstance, make_job: MakeJob
) -> None:
    before = _study(engine, indexed.study_uid)
    result = make_job()
    with session_scope(engine) as session:
        assert consumer.apply_result(session, result, _exports(objects)) == result.job_id
    series_uid, sop_uid = sr_uids(result.job_id)
    with session_scope(engine) as session:
        sr = session.get_one(Instance, sop_uid)
        series = session.get_one(Series, series_uid)
        assert (sr.study_uid, sr.series_uid, sr.object_key) == (indexed.study_uid, series_uid, dicom_key(indexed.study_uid, series_uid, sop_uid))
        assert (series.modality, series.series_number) == ("SR", 9901)
        stored = session.scalars(select(AuditEvent).where(AuditEvent.subtype == "instance-stored", AuditEvent.entity_what == sop_uid)).one()
        assert stored.agent_who == "doctorai-results" and stored.detail["duplicate"] == "false"
    ds = pydicom.dcmread(BytesIO(objects.get_bytes(sr.object_key)))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34" and ds.StudyInstanceUID == indexed.study_uid
    assert [str(e.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for e in ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence] == [indexed.sop_uid]

    # The study is as it was: ready at its revision, its last arrival unmoved; no sweep announces it again.
    assert _study(engine, indexed.study_uid) == before
    assert declare_ready(engine, quiet_period=0.0, ae_title="DOCTORAI", now=datetime.now(UTC) + timedelta(hours=1)) == []

    # A replay stores nothing twice.
    with session_scope(engine) as session:
        assert consumer.apply_result(session, result, _exports(objects)) is None
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(InstanceVersion).where(InstanceVersion.sop_uid == sop_uid)) == 1


def test_the_sr_of_an_amended_report_names_the_sr_it_replaces(
    engine: Engine, objects: ObjectStore, indexed: ReceivedInstance, make_job: MakeJob
) -> None:
    first, second = make_job(revision=1), make_job(revision=2, probability=0.2)
    for result in (first, second):
        with session_scope(engine) as session:
            consumer.apply_result(session, result, _exports(objects))
    series_uid, sop_uid = sr_uids(second.job_id)
    ds = pydicom.dcmread(BytesIO(objects.get_bytes(dicom_key(indexed.study_uid, series_uid, sop_uid))))
    (study,) = ds.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == indexed.study_uid
    (series,) = study.ReferencedSeriesSequence
    assert (series.SeriesInstanceUID, series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) == sr_uids(first.job_id)
    assert "PredecessorDocumentsSequence" not in pydicom.dcmread(
        BytesIO(objects.get_bytes(dicom_key(indexed.study_uid, *sr_uids(first.job_id))))
    )


def test_a_segmentation_the_model_made_is_indexed_in_its_study(
    engine: Engine, objects: ObjectStore, indexed: ReceivedInstance, make_job: MakeJob
) -> None:
    series = generate_uid()
    slices = [_slice(indexed.study_uid, series, n, np.zeros((8, 8)), [0.0, 0.0, float(n)], "T1 3D") for n in (1, 2)]
    result = make_job()
    mask = np.zeros((2, 8, 8), dtype=bool)
    mask[1, 2:5, 3:6] = True
    seg = segmentations.segmentation(mask, slices, manifest=deepbet.manifest(), job_id=result.job_id)
    key = dicom_key(indexed.study_uid, str(seg.SeriesInstanceUID), str(seg.SOPInstanceUID))
    objects.put_bytes(key, segmentations.to_bytes(seg), "application/dicom")  # as the worker stores it
    result = result.model_copy(update={"output_keys": [key, f"results/{result.job_id}/mask.nii.gz"]})
    before = _study(engine, indexed.study_uid)
    with session_scope(engine) as session:
        consumer.apply_result(session, result, _exports(objects))
    with session_scope(engine) as session:
        row = session.get_one(Instance, str(seg.SOPInstanceUID))
        assert (row.study_uid, row.object_key, row.sop_class_uid) == (indexed.study_uid, key, "1.2.840.10008.5.1.4.1.1.66.4")
        assert session.get_one(Series, str(seg.SeriesInstanceUID)).modality == "SEG"
    assert _study(engine, indexed.study_uid) == before


def test_a_result_read_from_text_makes_no_sr(
    engine: Engine, objects: ObjectStore, indexed: ReceivedInstance, make_job: MakeJob
) -> None:
    result = make_job().model_copy(update={"input_keys": ["DiagnosticReport/rad-1"]})  # a report-triage job's input
    with session_scope(engine) as session:
        assert consumer.apply_result(session, result, _exports(objects)) == result.job_id
    with session_scope(engine) as session:
        assert session.get(Instance, sr_uids(result.job_id)[1]) is None
