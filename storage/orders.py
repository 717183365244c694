"""Imaging orders, their links to studies (by accession number and patient), and the reports based on them.

Whichever arrives first, an order and a study meet by accession number (and agreeing patient id):
a report built after the order is `basedOn` its ServiceRequest; an order arriving after a report
adds itself to that report.
"""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Result, select, update
from sqlalchemy.orm import Session

from storage import fhir
from storage.fhir import store
from storage.tables.hl7 import Order
from storage.tables.index import Study
from storage.tables.pipeline import Report

# ServiceRequest statuses after which a study must not be routed (FHIR R4 request-status).
CANCELLED = ("revoked", "entered-in-error")


def _same_patient(a: str, b: str) -> bool:
    # Either side may not know the patient (DICOM PatientID is type 2): then accession decides.
    return not a or not b or a == b


def order_for_accession(session: Session, *, accession_number: str, patient_id: str = "") -> Order | None:
    """The newest order with this accession number whose patient agrees with `patient_id`, if any."""
    if not accession_number.strip():
        return None
    stmt = (
        select(Order)
        .where(Order.accession_number == accession_number.strip())
        .order_by(Order.updated_at.desc(), Order.service_request_id)
    )
    return next((o for o in session.scalars(stmt) if _same_patient(o.patient_id, patient_id.strip())), None)


def order_for_study(session: Session, *, study: Study) -> Order | None:
    """The order linked to a study, linking it first by accession number when it is not yet."""
    linked = session.scalar(select(Order).where(Order.study_uid == study.study_uid).limit(1))
    if linked is not None:
        return linked
    order = order_for_accession(session, accession_number=study.accession_number, patient_id=study.patient_id)
    if order is not None and order.study_uid is None:
        order.study_uid = study.study_uid
        order.updated_at = datetime.now(UTC)
        session.flush()
    return order


def study_for_order(session: Session, *, accession_number: str, patient_id: str) -> Study | None:
    """The study an order arriving after it belongs to: same accession number, agreeing patient."""
    if not accession_number.strip():
        return None
    stmt = select(Study).where(Study.accession_number == accession_number.strip()).order_by(Study.first_received_at)
    return next((s for s in session.scalars(stmt) if _same_patient(s.patient_id, patient_id)), None)


def save_order(
    session: Session,
    *,
    service_request_id: str,
    placer_number: str,
    filler_number: str,
    accession_number: str,
    patient_id: str,
    status: str,
    order_control: str,
    message_id: str,
) -> Order:
    """Create or update an order, and link it to its study when that arrived first."""
    now = datetime.now(UTC)
    order = session.get(Order, service_request_id)
    if order is None:
        order = Order(service_request_id=service_request_id, created_at=now, study_uid=None)
        session.add(order)
    # A status change (ORC-1 SC) may leave out identifiers the new order (NW) gave: keep them.
    order.placer_number = placer_number or order.placer_number or ""
    order.filler_number = filler_number or order.filler_number or ""
    order.accession_number = accession_number or order.accession_number or ""
    order.patient_id = patient_id or order.patient_id or ""
    order.status = status
    order.order_control = order_control
    order.message_id = message_id
    order.updated_at = now
    if order.study_uid is None:
        study = study_for_order(session, accession_number=order.accession_number, patient_id=order.patient_id)
        order.study_uid = study.study_uid if study is not None else None
    session.flush()
    return order


def find_order(session: Session, *, placer_number: str = "", filler_number: str = "") -> Order | None:
    """An order by its placer or filler number (EI as sent)."""
    if placer_number:
        found = session.scalar(select(Order).where(Order.placer_number == placer_number).limit(1))
        if found is not None:
            return found
    if filler_number:
        return session.scalar(select(Order).where(Order.filler_number == filler_number).limit(1))
    return None


def repoint_patient(session: Session, *, merged: str, surviving: str) -> tuple[int, int]:
    """Move orders and studies of patient identifier `merged` to `surviving` (ADT^A40 merge).

    Later studies and orders of the surviving patient then correlate with the earlier ones by
    patient; the stored DICOM objects keep the PatientID they were sent with. Returns the
    number of (orders, studies) moved.
    """
    merged, surviving = merged.strip(), surviving.strip()
    if not merged or merged == surviving:
        return 0, 0
    now = datetime.now(UTC)
    orders = session.execute(update(Order).where(Order.patient_id == merged).values(patient_id=surviving, updated_at=now))
    studies = session.execute(update(Study).where(Study.patient_id == merged).values(patient_id=surviving))
    return _count(orders), _count(studies)


def _count(result: Result[Any]) -> int:
    # An UPDATE's result is a CursorResult; rowcount is the rows it matched.
    return int(getattr(result, "rowcount", 0) or 0)


def with_order(session: Session, study: Study, report: fhir.DiagnosticReport) -> fhir.DiagnosticReport:
    """The report with `basedOn` the ServiceRequest of the study's order, when there is one."""
    order = order_for_study(session, study=study)
    if order is None or not store.exists(session, "ServiceRequest", order.service_request_id):
        return report
    return _based_on(report, order)


def _based_on(report: fhir.DiagnosticReport, order: Order) -> fhir.DiagnosticReport:
    ref = f"ServiceRequest/{order.service_request_id}"
    existing = list(report.basedOn or [])
    if any(r.reference == ref for r in existing):
        return report
    return report.model_copy(update={"basedOn": [*existing, fhir.Reference(reference=ref)]})


def link_reports(session: Session, order: Order) -> list[str]:
    """Add the order to the reports already made for its study; returns the reports changed."""
    if order.study_uid is None:
        return []
    changed = []
    for report_id in session.scalars(select(Report.diagnostic_report_id).where(Report.study_uid == order.study_uid)):
        if not store.exists(session, "DiagnosticReport", report_id):
            continue
        report = store.read(session, "DiagnosticReport", report_id)
        if not isinstance(report, fhir.DiagnosticReport):
            continue
        linked = _based_on(report, order)
        if linked is not report:
            store.save(session, linked)
            changed.append(f"DiagnosticReport/{report_id}")
    return changed
