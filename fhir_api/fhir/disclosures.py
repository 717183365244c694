"""Audit records of disclosures: reads, searches and history pages of the FHIR store.

Every read is recorded in the transaction that reads the data, with the correlation id of the
study it discloses (DESIGN.md section 1, "who read what"), and names the patient the data is
about, so "who saw this patient's reports" is one AuditEvent search.
"""

from sqlalchemy.orm import Session

from audit import log as audit_log
from audit.records import RESOURCE_READ, RESOURCE_SEARCHED, AuditRecord
from fhir_api.fhir import search
from storage import fhir
from storage.fhir import store
from storage.fhir.references import patient_reference, study_ids
from storage.instances import correlation_id_for_study

# Audit correlation ids of accesses that disclose no study.
READ_CORRELATION = "read"
SEARCH_CORRELATION = "search"


def audit_read(session: Session, resource: fhir.Resource, *, who: str, address: str) -> None:
    """Record that the principal read this resource, under its study's correlation id when it has one.

    The detail names the patient the resource is about, so an AuditEvent search by patient finds it.
    """
    studies = study_ids(resource)
    patient = patient_reference(resource)
    audit_log.append(
        session,
        AuditRecord(
            hop=RESOURCE_READ,
            correlation_id=correlation_id_for_study(studies[0]) if studies else READ_CORRELATION,
            agent_who=who,
            agent_address=address,
            entity_what=f"{resource.get_resource_type()}/{resource.id}",
            detail={"patient": patient} if patient else {},
        ),
    )


def audit_search(
    session: Session,
    result: search.SearchResult,
    resource_type: str,
    *,
    who: str,
    address: str,
    query: str,
) -> None:
    """Record a search: one record per (study, patient) whose resources it disclosed, else one record.

    A record under a study's correlation id joins that study's trail; each names its patient and
    the disclosed resources, so "who saw this patient's reports" is one AuditEvent search. All of
    a search's records are appended at once (one chain lock, one insert).
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for disclosed in store.disclosures(session, [*result.matches, *result.included]):
        correlation = correlation_id_for_study(disclosed.studies[0]) if disclosed.studies else SEARCH_CORRELATION
        groups.setdefault((correlation, disclosed.patient), []).append(disclosed.reference)
    total = "" if result.total is None else str(result.total)

    def record(correlation: str, detail: dict[str, str]) -> AuditRecord:
        return AuditRecord(
            hop=RESOURCE_SEARCHED,
            correlation_id=correlation,
            agent_who=who,
            agent_address=address,
            entity_what=resource_type,
            detail={"query": query, "total": total, **detail},
        )

    records = [
        record(correlation, {"resources": ",".join(refs), **({"patient": patient} if patient else {})})
        for (correlation, patient), refs in groups.items()
    ] or [record(SEARCH_CORRELATION, {})]
    audit_log.append_many(session, records)


def audit_history(
    session: Session,
    versions: list[store.Version],
    resource_type: str,
    resource_id: str | None,
    *,
    who: str,
    address: str,
) -> None:
    """Record a history read: one record per (study, patient) whose versions it disclosed, else one record.

    A history page discloses every version on it, deleted resources' earlier content included,
    so it is recorded as reads are: a record joins its study's trail and names its patient.
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for version in versions:
        studies = study_ids(version.resource) if version.resource is not None else []
        patient = patient_reference(version.resource) if version.resource is not None else ""
        correlation = correlation_id_for_study(studies[0]) if studies else READ_CORRELATION
        reference = f"{version.resource_type}/{version.resource_id}/_history/{version.version_id}"
        groups.setdefault((correlation, patient), []).append(reference)
    what = f"{resource_type}/{resource_id}/_history" if resource_id else f"{resource_type}/_history"

    def record(correlation: str, detail: dict[str, str]) -> AuditRecord:
        return AuditRecord(
            hop=RESOURCE_READ,
            correlation_id=correlation,
            agent_who=who,
            agent_address=address,
            entity_what=what[:256],
            detail=detail,
        )

    records = [
        record(correlation, {"versions": ",".join(refs), **({"patient": patient} if patient else {})})
        for (correlation, patient), refs in groups.items()
    ] or [record(READ_CORRELATION, {})]
    audit_log.append_many(session, records)
