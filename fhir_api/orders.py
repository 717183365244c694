"""Orders meet studies: the DiagnosticReport of a study ordered by HL7 is `basedOn` its ServiceRequest.

Whichever arrives first, the link is made by accession number (and agreeing patient id): a report
built after the order names it; an order arriving after a report adds itself to that report.
"""

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import fhir
from fhir_api import store
from storage.orders import order_for_study
from storage.tables import Order, Report, Study


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
