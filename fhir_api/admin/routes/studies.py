"""/admin/studies: studies as received, their parts and timeline, and the two operations on them.

`release` announces a held study again (reason manual-release: the router skips hold rules);
`reprocess` announces a stored study again (reason reprocess) so routing runs on it anew. Both
open a new revision (DESIGN.md 5.4) and queue `study.ready` through the outbox.
"""

import json
from dataclasses import asdict
from datetime import UTC, datetime

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy.orm import Session
from audit.records import ADMIN_OPERATION
from fhir_api.admin.access import ActorDep, audit_change
from typing import Annotated, Any
from fastapi import Depends, Query
from fastapi.exceptions import RequestValidationError
from audit.records import RESOURCE_READ, STUDY_READY
from fhir_api.admin.access import audit_read
from fhir_api.admin.paging import Page, Paging, page_of, sorted_by
from fhir_api.deps import EngineDep
from fhir_api.errors import NotFound
from integration import studies as study_operations
from integration.messages import StudyReady
from storage.db import read_scope, session_scope
from storage.fhir.store import read_stored
from storage.jobs import study_jobs, study_reports
from storage.paging import Order
from storage.studies import (
    DEFAULT_STUDY_ORDER,
    STUDY_SORTS,
    StudyFilter,
    list_studies,
    revisions,
    series_with_counts,
    timeline,
)
from storage.tables.index import Study
from storage.tables.pipeline import InferenceJob

router = APIRouter(prefix="/studies", tags=["studies"])


class StudyOut(BaseModel):
    """A study as the index holds it."""

    study_uid: str
    correlation_id: str
    status: str
    revision: int
    ready_reason: str
    calling_ae: str
    source_address: str
    patient_id: str
    accession_number: str
    study_date: str
    study_description: str
    first_received_at: datetime
    last_received_at: datetime
    ready_at: datetime | None


class SeriesOut(BaseModel):
    """One series and its instance count."""

    series_uid: str
    modality: str
    body_part: str
    series_number: int | None
    series_description: str
    instances: int


class JobOut(BaseModel):
    """One inference job."""

    job_id: str
    study_uid: str
    revision: int
    model: str
    model_version: str
    status: str
    error: str
    created_at: datetime
    finished_at: datetime | None


class ReportOut(BaseModel):
    """A DiagnosticReport made for the study."""

    job_id: str
    revision: int
    diagnostic_report_id: str
    created_at: datetime


class RevisionOut(BaseModel):
    """One time the study was declared ready."""

    revision: int
    reason: str
    at: datetime
    who: str
    instances: int


class StudyDetail(StudyOut):
    """A study with its series, revisions, jobs and reports."""

    instances: int
    series: list[SeriesOut]
    revisions: list[RevisionOut]
    jobs: list[JobOut]
    reports: list[ReportOut]


class TimelineEntryOut(BaseModel):
    """One thing that happened to the study."""

    at: datetime
    kind: str
    what: str
    detail: dict[str, str]


class Announced(BaseModel):
    """The revision a release or reprocess announced."""

    study_uid: str
    revision: int
    reason: str
    event_id: str
    instances: int


def _out(study: Study) -> StudyOut:
    return StudyOut.model_validate(study, from_attributes=True)


def job_out(job: InferenceJob) -> JobOut:
    """A job as answered (here and by /admin/jobs)."""
    return JobOut.model_validate(job, from_attributes=True)


def _found(session: Session, study_uid: str) -> Study:
    study = session.get(Study, study_uid)
    if study is None:
        raise NotFound(f"study {study_uid} is not stored")
    return study


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _date(value: str | None) -> str | None:
    """A StudyDate bound as DICOM DA (YYYYMMDD), from YYYYMMDD or YYYY-MM-DD."""
    if value is None:
        return None
    digits = value.replace("-", "")
    if len(digits) != 8 or not digits.isdigit():
        problem = {"loc": ["query", "study_date"], "msg": "a date is YYYY-MM-DD", "type": "value_error"}
        raise RequestValidationError([problem])
    return digits


@router.get("")
def search_studies(
    engine: EngineDep,
    paging: Annotated[Paging, Depends(sorted_by(STUDY_SORTS, DEFAULT_STUDY_ORDER))],
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    source_ae: str | None = None,
    modality: str | None = None,
    patient_id: Annotated[str | None, Query(max_length=64)] = None,
    accession: Annotated[str | None, Query(max_length=64)] = None,
    study_date_from: Annotated[str | None, Query(description="StudyDate from, YYYY-MM-DD")] = None,
    study_date_to: Annotated[str | None, Query(description="StudyDate to, YYYY-MM-DD")] = None,
) -> Page[StudyOut]:
    """Studies by status, received between since and until (ISO 8601, UTC unless zoned; inclusive), source AE,
    modality, patient id, accession number and study date; most recently received first unless sorted otherwise."""
    where = StudyFilter(
        status=status,
        since=_utc(since),
        until=_utc(until),
        calling_ae=source_ae,
        modality=modality,
        patient_id=patient_id,
        accession_number=accession,
        study_date_from=_date(study_date_from),
        study_date_to=_date(study_date_to),
    )
    with read_scope(engine) as session:
        rows, total = list_studies(session, where, order=paging.order, limit=paging.limit, offset=paging.offset)
        return paging.of([_out(s) for s in rows], total)


@router.get("/{study_uid}")
def read_study(study_uid: str, engine: EngineDep) -> StudyDetail:
    """One study with its series (and instance counts), inference jobs and reports."""
    with read_scope(engine) as session:
        study = _found(session, study_uid)
        series = [
            SeriesOut(
                series_uid=s.series_uid,
                modality=s.modality,
                body_part=s.body_part,
                series_number=s.series_number,
                series_description=s.series_description,
                instances=n,
            )
            for s, n in series_with_counts(session, study_uid=study_uid)
        ]
        return StudyDetail(
            **_out(study).model_dump(),
            instances=sum(s.instances for s in series),
            series=series,
            revisions=[
                RevisionOut(**asdict(r)) for r in revisions(session, study_uid=study_uid, subtype=STUDY_READY.subtype)
            ],
            jobs=[job_out(j) for j in study_jobs(session, study_uid=study_uid)],
            reports=[
                ReportOut.model_validate(r, from_attributes=True) for r in study_reports(session, study_uid=study_uid)
            ],
        )


@router.get("/{study_uid}/timeline")
def read_timeline(
    study_uid: str,
    engine: EngineDep,
    paging: Annotated[Paging, Depends(sorted_by(("at", "kind", "what"), (Order("at"),)))],
) -> Page[TimelineEntryOut]:
    """Every audit record, job, forward and delivery of the study, in time order unless sorted otherwise."""
    with read_scope(engine) as session:
        study = _found(session, study_uid)
        entries = [
            TimelineEntryOut(at=e.at, kind=e.kind, what=e.what, detail=e.detail) for e in timeline(session, study=study)
        ]
    return page_of(entries, paging, getattr)


class StudyReportOut(BaseModel):
    """A report of the study as an EHR reads it: the DiagnosticReport and its Observations, FHIR R4 JSON."""

    job_id: str
    model: str
    diagnostic_report: dict[str, Any]
    observations: list[dict[str, Any]]


@router.get("/{study_uid}/reports")
def read_reports(study_uid: str, engine: EngineDep, actor: ActorDep) -> Page[StudyReportOut]:
    """The study's current reports as the FHIR API answers them; each read is audited, as a FHIR read is."""
    found = []
    with session_scope(engine) as session:
        study = _found(session, study_uid)
        models = {j.job_id: j.model for j in study_jobs(session, study_uid=study_uid)}
        for report in study_reports(session, study_uid=study_uid):
            reference = f"DiagnosticReport/{report.diagnostic_report_id}"
            for stored in read_stored(session, [reference]):
                resource = json.loads(stored.content)
                refs = [r["reference"] for r in resource.get("result", []) if "reference" in r]
                found.append(
                    StudyReportOut(
                        job_id=report.job_id,
                        model=models.get(report.job_id, ""),
                        diagnostic_report=resource,
                        observations=[json.loads(o.content) for o in read_stored(session, refs)],
                    )
                )
                patient = resource.get("subject", {}).get("reference", "")
                detail = {"via": "admin", **({"patient": patient} if patient else {})}
                audit_read(
                    session,
                    actor,
                    hop=RESOURCE_READ,
                    correlation_id=study.correlation_id,
                    entity=reference,
                    detail=detail,
                )
    return Page[StudyReportOut](total=len(found), items=found, limit=len(found), offset=0)


def _announced(ready: StudyReady) -> Announced:
    return Announced(
        study_uid=ready.study_uid,
        revision=ready.revision,
        reason=ready.reason,
        event_id=ready.event_id,
        instances=len(ready.instances),
    )


def _operate(study_uid: str, operation: str, engine: EngineDep, actor: ActorDep) -> Announced:
    act = study_operations.release if operation == "release" else study_operations.reprocess
    with session_scope(engine) as session:
        study = _found(session, study_uid)
        before = {"status": study.status, "revision": study.revision}
        ready = act(session, study_uid=study_uid, who=actor.subject)
        audit_change(
            session,
            actor,
            hop=ADMIN_OPERATION,
            before=before,
            after={"status": study.status, "revision": study.revision, "reason": ready.reason},
            correlation_id=study.correlation_id,
            detail={"operation": operation, "study_uid": study_uid},
        )
    return _announced(ready)


@router.post("/{study_uid}/release")
def release_study(study_uid: str, engine: EngineDep, actor: ActorDep) -> Announced:
    """Release a held study: a new revision routed without hold rules (409 when the study is not held)."""
    return _operate(study_uid, "release", engine, actor)


@router.post("/{study_uid}/reprocess")
def reprocess_study(study_uid: str, engine: EngineDep, actor: ActorDep) -> Announced:
    """Route a stored study again at a new revision (409 while it is still receiving)."""
    return _operate(study_uid, "reprocess", engine, actor)
