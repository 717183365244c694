"""Modality Performed Procedure Steps (MPPS) from a pynetdicom SCU: the count they give a study makes it
ready as soon as that many instances are stored; a step in progress holds the quiet period; and the
statuses of PS3.4 F.7 for what a step may not do."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]
from sqlalchemy import select

from dicom_listener.stability import declare_ready
from storage.db import session_scope
from storage.tables.audit import AuditEvent
from storage.tables.index import PerformedStep, Study
from doctorai.stack import StackConfig
from tests.dicom_listener.conftest import Listener, ct, send, serve

LATER = timedelta(seconds=5)


@contextmanager
def _modality(listener: Listener, ae_title: str = "CT_ROOM1", syntax: str = ImplicitVRLittleEndian) -> Iterator[Association]:
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(ModalityPerformedProcedureStep, syntax)
    assoc = ae.associate("127.0.0.1", listener.settings.dicom_port, ae_title="DOCTORAI")
    assert assoc.is_established
    try:
        yield assoc
    finally:
        assoc.release()


def _started(study_uid: str) -> Dataset:
    ds = Dataset()
    scheduled = Dataset()
    scheduled.StudyInstanceUID, scheduled.AccessionNumber = study_uid, "ACC-MPPS-1"
    ds.ScheduledStepAttributesSequence = [scheduled]
    ds.PerformedProcedureStepID, ds.PerformedStationAETitle, ds.Modality = "PPS1", "CT_ROOM1", "CT"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    return ds


def _ended(instances: list[Dataset], status: str = "COMPLETED") -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    series = Dataset()
    series.SeriesInstanceUID = instances[0].SeriesInstanceUID if instances else generate_uid()
    references = []
    for instance in instances:
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = instance.SOPClassUID, instance.SOPInstanceUID
        references.append(ref)
    series.ReferencedImageSequence = references
    ds.PerformedSeriesSequence = [series]
    return ds


def _study(study_uid: str, n: int) -> list[Dataset]:
    series_uid = generate_uid()
    out = []
    for _ in range(n):
        ds = ct()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, series_uid, generate_uid()
        out.append(ds)
    return out


def _state(listener: Listener, study_uid: str) -> tuple[str, str, int | None]:
    with session_scope(listener.engine) as s:
        study = s.get_one(Study, study_uid)
        return study.status, study.ready_reason, study.expected_instances


@pytest.mark.stack
@pytest.mark.parametrize("stored_first", [2, 3])
def test_a_completed_step_makes_the_study_ready_once_its_instances_are_stored(listener: Listener, stored_first: int) -> None:
    """The N-SET COMPLETED comes after 2 of the 3 instances (the third makes the study ready), or after all 3 (it does)."""
    study_uid = generate_uid()
    instances = _study(study_uid, 3)
    step_uid = generate_uid()
    with _modality(listener) as assoc:
        assert assoc.send_n_create(_started(study_uid), ModalityPerformedProcedureStep, step_uid)[0].Status == 0x0000
        for ds in instances[:stored_first]:
            assert send(listener.settings.dicom_port, ds).Status == 0x0000
        assert assoc.send_n_set(_ended(instances), ModalityPerformedProcedureStep, step_uid)[0].Status == 0x0000
    if stored_first < 3:
        assert _state(listener, study_uid) == ("receiving", "", 3)
        assert send(listener.settings.dicom_port, instances[2]).Status == 0x0000
    # Ready in the transaction of the last C-STORE or of the N-SET: no quiet period, no sweep.
    assert _state(listener, study_uid) == ("ready", "count-reached", 3)
    with session_scope(listener.engine) as s:
        step = s.get_one(PerformedStep, step_uid)
        assert (step.status, step.instances, step.accession_number) == ("COMPLETED", 3, "ACC-MPPS-1")
        subtypes = set(s.scalars(select(AuditEvent.subtype)))
    assert {"procedure-step-created", "procedure-step-updated"} <= subtypes


@pytest.mark.stack
def test_a_step_in_progress_holds_the_quiet_period_until_its_modality_goes_silent(listener: Listener) -> None:
    study_uid = generate_uid()
    (instance,) = _study(study_uid, 1)
    with _modality(listener) as assoc:
        assert assoc.send_n_create(_started(study_uid), ModalityPerformedProcedureStep, generate_uid())[0].Status == 0x0000
    assert send(listener.settings.dicom_port, instance).Status == 0x0000
    later = datetime.now(UTC) + LATER
    assert declare_ready(listener.engine, quiet_period=0.5, ae_title="DOCTORAI", now=later, step_hold=3600) == []
    # A modality that said nothing for longer than the hold no longer holds the study.
    (ready,) = declare_ready(listener.engine, quiet_period=0.5, ae_title="DOCTORAI", now=later + timedelta(hours=2), step_hold=3600)
    assert ready.study_uid == study_uid and ready.reason == "quiet-period"


@pytest.mark.stack
def test_what_a_step_may_not_do_gets_the_statuses_of_ps3_4_f7(listener: Listener) -> None:
    study_uid = generate_uid()
    step_uid = generate_uid()
    with _modality(listener) as assoc:
        assert assoc.send_n_set(_ended([]), ModalityPerformedProcedureStep, generate_uid())[0].Status == 0x0112
        not_started = _started(study_uid)
        not_started.PerformedProcedureStepStatus = "COMPLETED"
        assert assoc.send_n_create(not_started, ModalityPerformedProcedureStep, step_uid)[0].Status == 0x0106
        no_study = _started(study_uid)
        del no_study.ScheduledStepAttributesSequence[0].StudyInstanceUID
        assert assoc.send_n_create(no_study, ModalityPerformedProcedureStep, step_uid)[0].Status == 0x0120
        assert assoc.send_n_create(_started(study_uid), ModalityPerformedProcedureStep, step_uid)[0].Status == 0x0000
        assert assoc.send_n_create(_started(study_uid), ModalityPerformedProcedureStep, step_uid)[0].Status == 0x0111
        assert assoc.send_n_set(_ended([], "DISCONTINUED"), ModalityPerformedProcedureStep, step_uid)[0].Status == 0x0000
        assert assoc.send_n_set(_ended([]), ModalityPerformedProcedureStep, step_uid)[0].Status == 0xA710
        # Without an Affected SOP Instance UID we assign one (PS3.7 10.1.5.1.3).
        assert assoc.send_n_create(_started(generate_uid()), ModalityPerformedProcedureStep, None)[0].Status == 0x0000
    with session_scope(listener.engine) as s:
        assert len([uid for uid in s.scalars(select(PerformedStep.sop_uid)) if uid != step_uid]) == 1


@pytest.mark.stack
def test_only_the_ae_that_created_a_step_may_set_it(listener: Listener) -> None:
    """Issue 18: an MPPS N-SET was accepted from an AE other than the one that created the step."""
    step_uid = generate_uid()
    with _modality(listener) as assoc:
        assert assoc.send_n_create(_started(generate_uid()), ModalityPerformedProcedureStep, step_uid)[0].Status == 0x0000
    with _modality(listener, "INTRUDER") as assoc:
        status = assoc.send_n_set(_ended([]), ModalityPerformedProcedureStep, step_uid)[0]
    # 0110H Processing failure (PS3.4 F.7.2.2), with a comment naming no one.
    assert status.Status == 0x0110 and "another AE" in status.ErrorComment
    with session_scope(listener.engine) as s:
        step = s.get_one(PerformedStep, step_uid)
        assert step.status == "IN PROGRESS"
        (refused,) = s.scalars(select(AuditEvent).where(AuditEvent.agent_who == "ae:INTRUDER"))
        assert refused.subtype == "procedure-step-updated" and refused.outcome == "4"  # minor failure
    with _modality(listener) as assoc:
        assert assoc.send_n_set(_ended([]), ModalityPerformedProcedureStep, step_uid)[0].Status == 0x0000


@pytest.mark.stack
def test_a_step_data_set_is_bounded_on_the_wire_and_as_it_inflates(services: StackConfig, tmp_path: Path) -> None:
    """Issue 18: MPPS read N-CREATE and N-SET data sets whole, deflated ones inflated without a bound."""
    for listener in serve(services, tmp_path, dicom_max_request_bytes=65536):
        big = _started(generate_uid())
        big.PerformedProcedureStepDescription = "x" * 64  # within its VR; the padding below is not
        big.add_new(0x00400280, "ST", "y" * 100000)  # Comments on the Performed Procedure Step
        with _modality(listener) as assoc:
            status = assoc.send_n_create(big, ModalityPerformedProcedureStep, generate_uid())[0]
        # 0213H Resource limitation (PS3.7 Annex C), refused while it arrived.
        assert status.Status == 0x0213 and "larger than 65536" in status.ErrorComment
        bomb = _started(generate_uid())
        bomb.add_new(0x00400280, "ST", " " * (4 << 20))  # a few KB deflated, 4 MB inflated
        with _modality(listener, syntax=DeflatedExplicitVRLittleEndian) as assoc:
            status = assoc.send_n_create(bomb, ModalityPerformedProcedureStep, generate_uid())[0]
            assert status.Status == 0x0110 and "inflates past 65536" in status.ErrorComment
            assert assoc.send_n_create(_started(generate_uid()), ModalityPerformedProcedureStep, generate_uid())[0].Status == 0
