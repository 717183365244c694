"""Audit records of disclosures: reads, searches and history pages of the FHIR store.

Every read is recorded, and committed before its answer is sent, with the correlation id of the
study it discloses (DESIGN.md section 1, "who read what"), and names the patient the data is
about, so "who saw this patient's reports" is one AuditEvent search.
"""

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from sqlalchemy.orm import Session

from audit import log as audit_log
from audit.records import RESOURCE_READ, RESOURCE_SEARCHED, AuditRecord, Hop
from fhir_api.fhir import search
from storage import fhir
from storage.fhir import store
from storage.fhir.references import patient_reference, study_ids
from storage.instances import correlation_id_for_study

# Audit correlation ids of accesses that disclose no study.
READ_CORRELATION = "read"
SEARCH_CORRELATION = "search"
# Search parameters whose values the trail keeps: identifiers (logical ids, business identifiers,
# references, which name resources by id), and the result parameters that shape the answer (FHIR
# R4 search.html 3.2.1.5), which say nothing about anyone. Every other value (names, birth dates,
# addresses, free text) is masked: audit records hold identifiers only.
_IDENTIFYING = frozenset({"_id", "identifier", "patient", "subject", "based-on", "encounter", "focus"})
_RESULT = frozenset({"_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total"})
MASKED = "***"


def audited_query(query: str) -> str:
    """A search's query string as the trail keeps it: every parameter named, identifying values only.

    Modifiers do not count (`identifier:of-type`); a chain keeps its value only when it ends in an
    identifier (`subject.identifier`, not `subject.name`).
    """
    kept = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        links = [link.split(":", 1)[0] for link in name.split(".")]
        keep = links[-1] in ("_id", "identifier") if len(links) > 1 else links[0] in _IDENTIFYING | _RESULT
        kept.append((name, value if keep else MASKED))
    return urlencode(kept, safe="/|:,*")


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


@dataclass(frozen=True)
class _Access:
    """What one audited access records, whatever it disclosed: its hop, entity and fixed detail."""

    hop: Hop
    who: str
    address: str
    what: str
    detail: dict[str, str]


def _append_grouped(
    session: Session, access: _Access, disclosed: list[tuple[str, str, str]], *, listed: str, fallback: str
) -> None:
    # One record per (correlation, patient) of the disclosed (correlation, patient, reference)
    # triples, naming its references under `listed`; one record under `fallback` when none.
    groups: dict[tuple[str, str], list[str]] = {}
    for correlation, patient, reference in disclosed:
        groups.setdefault((correlation, patient), []).append(reference)

    def record(correlation: str, detail: dict[str, str]) -> AuditRecord:
        return AuditRecord(
            hop=access.hop,
            correlation_id=correlation,
            agent_who=access.who,
            agent_address=access.address,
            entity_what=access.what[:256],
            detail={**access.detail, **detail},
        )

    records = [
        record(correlation, {listed: ",".join(refs), **({"patient": patient} if patient else {})})
        for (correlation, patient), refs in groups.items()
    ] or [record(fallback, {})]
    audit_log.append_many(session, records)


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

    The query is recorded with its values masked but for identifiers (`audited_query`).

    A record under a study's correlation id joins that study's trail; each names its patient and
    the disclosed resources, so "who saw this patient's reports" is one AuditEvent search. All of
    a search's records are appended at once (one chain lock, one insert).
    """
    disclosed = [
        (correlation_id_for_study(d.studies[0]) if d.studies else SEARCH_CORRELATION, d.patient, d.reference)
        for d in store.disclosures(session, [*result.matches, *result.included])
    ]
    total = "" if result.total is None else str(result.total)
    access = _Access(RESOURCE_SEARCHED, who, address, resource_type, {"query": audited_query(query), "total": total})
    _append_grouped(session, access, disclosed, listed="resources", fallback=SEARCH_CORRELATION)


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
    disclosed = []
    for version in versions:
        studies = study_ids(version.resource) if version.resource is not None else []
        patient = patient_reference(version.resource) if version.resource is not None else ""
        correlation = correlation_id_for_study(studies[0]) if studies else READ_CORRELATION
        disclosed.append((correlation, patient, f"{version.resource_type}/{version.resource_id}/_history/{version.version_id}"))
    what = f"{resource_type}/{resource_id}/_history" if resource_id else f"{resource_type}/_history"
    access = _Access(RESOURCE_READ, who, address, what, {})
    _append_grouped(session, access, disclosed, listed="versions", fallback=READ_CORRELATION)
