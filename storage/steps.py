"""Modality Performed Procedure Steps (MPPS, PS3.4 F.7) and the instance count they give a study.

In IHE Scheduled Workflow the modality reports each procedure step it performed for an order:
N-CREATE when it starts, N-SET with COMPLETED (or DISCONTINUED) and the instances of every series
it made when it ends. Once no step of a study is still in progress, those instances are the ones
the study should hold, so it is complete when that many are stored, without a quiet period.
"""

from datetime import datetime
from typing import cast

from sqlalchemy import ColumnElement, Table, bindparam, exists, func, select
from sqlalchemy.orm import Session

from storage.tables.index import PerformedStep, Study

IN_PROGRESS = "IN PROGRESS"
FINAL = ("COMPLETED", "DISCONTINUED")

_STEPS = cast(Table, PerformedStep.__table__)


def expected_from_steps(study_uid: ColumnElement[str]) -> ColumnElement[int]:
    """SQL for the instances a study's steps list: NULL without steps, or while one is in progress."""
    in_progress = exists().where(_STEPS.c.study_uid == study_uid, _STEPS.c.status == IN_PROGRESS)
    listed = select(func.sum(_STEPS.c.instances)).where(_STEPS.c.study_uid == study_uid, ~in_progress)
    return listed.scalar_subquery()


def step(session: Session, *, sop_uid: str) -> PerformedStep | None:
    """A performed step by its SOP Instance UID, locked for update."""
    return session.get(PerformedStep, sop_uid, with_for_update=True)


def create_step(
    session: Session, *, sop_uid: str, study_uid: str, accession_number: str, instances: int | None, calling_ae: str, now: datetime
) -> PerformedStep:
    """Record a step a modality started (N-CREATE); its status is IN PROGRESS (PS3.4 F.7.2.1)."""
    row = PerformedStep(
        sop_uid=sop_uid,
        study_uid=study_uid,
        accession_number=accession_number,
        status=IN_PROGRESS,
        instances=instances,
        calling_ae=calling_ae,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def expected_instances(session: Session, *, study_uid: str) -> int | None:
    """The instances a study's steps list, once none of them is in progress."""
    value = session.scalar(select(expected_from_steps(bindparam("study", study_uid))))
    return int(value) if value is not None else None


def apply_to_study(session: Session, *, study_uid: str) -> Study | None:
    """Give a stored study the count its steps list; returns it locked, or None when it is not stored yet.

    The latest word wins: the steps' count when the last of them ends, and a count an instance
    announces (NumberOfStudyRelatedInstances) when it arrives. A study not stored yet takes the
    steps' count with its first instance (the study upsert in storage.instances reads
    expected_from_steps).
    """
    expected = expected_instances(session, study_uid=study_uid)
    study = session.get(Study, study_uid, with_for_update=True)
    if study is not None and expected is not None:
        study.expected_instances = expected
    return study
