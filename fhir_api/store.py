"""The FHIR store: current resources, every version of them, and a search index, in SQL.

Index rows are (resource type, id, search parameter name, normalised value). References are
stored as relative "Type/id"; tokens as both "code" and "system|code"; dates as UTC ISO 8601
text, so that string order is time order. New parameters (code, date, ...) only need an entry
in `_extract`.
"""

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from fhir_api import fhir
from fhir_api.errors import NotFound
from fhir_api.mapping import relative_reference
from storage.tables import FhirResource, FhirResourceVersion, FhirSearchIndex

# http://hl7.org/fhir/R4/valueset-diagnostic-report-status.html
REPORT_STATUS_SYSTEM = "http://hl7.org/fhir/diagnostic-report-status"

# A criterion: a parameter and the values any of which may match (a comma list, FHIR OR).
Criterion = tuple[str, Sequence[str]]


def instant_text(moment: datetime) -> str:
    """A UTC instant as sortable text (the `_lastUpdated` index value)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _refs(references: Iterable[fhir.Reference] | None) -> list[str]:
    return [relative_reference(r.reference) for r in references or [] if r.reference]


def _tokens(system: str | None, code: str | None) -> list[str]:
    if not code:
        return []
    return [code, f"{system}|{code}"] if system else [code]


def _identifier_tokens(identifiers: Iterable[fhir.Identifier] | None) -> list[str]:
    return [t for i in identifiers or [] for t in _tokens(i.system, i.value)]


def _patient_refs(refs: list[str]) -> list[str]:
    return [r for r in refs if r.startswith("Patient/")]


def _extract(resource: fhir.Resource) -> list[tuple[str, str]]:
    """The search-parameter values of a resource (http://hl7.org/fhir/R4/searchparameter-registry.html)."""
    values: list[tuple[str, str]] = []

    def add(param: str, items: Iterable[str]) -> None:
        values.extend((param, v) for v in items)

    if isinstance(resource, fhir.DiagnosticReport):
        subject = _refs([resource.subject] if resource.subject else [])
        add("subject", subject)
        add("patient", _patient_refs(subject))
        add("status", _tokens(REPORT_STATUS_SYSTEM, resource.status))
        add("based-on", _refs(resource.basedOn))
        add("result", _refs(resource.result))
        add("imaging-study", _refs(resource.imagingStudy))
    elif isinstance(resource, fhir.ImagingStudy):
        add("patient", _patient_refs(_refs([resource.subject] if resource.subject else [])))
        add("identifier", _identifier_tokens(resource.identifier))
    elif isinstance(resource, fhir.Observation):
        add("patient", _patient_refs(_refs([resource.subject] if resource.subject else [])))
        add("derived-from", _refs(resource.derivedFrom))
    elif isinstance(resource, fhir.Patient):
        add("identifier", _identifier_tokens(resource.identifier))
    # Index values are at most 256 characters; a longer one could not be matched exactly anyway.
    return sorted({(p, v) for p, v in values if len(v) <= 256})


def _without_version(content: str) -> str:
    data: dict[str, Any] = json.loads(content)
    meta = data.get("meta", {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    if not meta:
        data.pop("meta", None)
    return json.dumps(data, sort_keys=True)


def save(session: Session, resource: fhir.Resource, *, now: datetime | None = None) -> int:
    """Create or update a resource; returns its version (unchanged content keeps the current one).

    Sets meta.versionId and meta.lastUpdated, writes the history row and rewrites the index rows.
    """
    resource_type = resource.get_resource_type()
    if not resource.id:
        raise ValueError(f"a {resource_type} needs an id to be stored")
    current = session.get(FhirResource, (resource_type, resource.id))
    if current is not None and _without_version(current.content) == _without_version(fhir.dump(resource)):
        return current.version_id
    now = now or datetime.now(UTC)
    version = 1 if current is None else current.version_id + 1
    meta = resource.meta.model_copy() if resource.meta else fhir.Meta()
    meta.versionId = str(version)
    meta.lastUpdated = now
    content = fhir.dump(resource.model_copy(update={"meta": meta}))
    if current is None:
        current = FhirResource(resource_type=resource_type, resource_id=resource.id)
        session.add(current)
    current.version_id = version
    current.last_updated = now
    current.content = content
    session.add(
        FhirResourceVersion(
            resource_type=resource_type,
            resource_id=resource.id,
            version_id=version,
            last_updated=now,
            content=content,
        )
    )
    session.execute(
        delete(FhirSearchIndex).where(
            FhirSearchIndex.resource_type == resource_type, FhirSearchIndex.resource_id == resource.id
        )
    )
    rows = [("_id", resource.id), ("_lastUpdated", instant_text(now)), *_extract(resource)]
    session.add_all(
        FhirSearchIndex(resource_type=resource_type, resource_id=resource.id, param=p, value=v) for p, v in rows
    )
    session.flush()
    return version


def read(session: Session, resource_type: str, resource_id: str) -> fhir.Resource:
    """The current version of a resource, or NotFound."""
    row = session.get(FhirResource, (resource_type, resource_id))
    if row is None:
        raise NotFound(f"{resource_type}/{resource_id} is not known")
    return fhir.parse(row.content)


def exists(session: Session, resource_type: str, resource_id: str) -> bool:
    """Whether the store holds a current version of this resource."""
    return session.get(FhirResource, (resource_type, resource_id)) is not None


def _matching(resource_type: str, criteria: Sequence[Criterion]) -> Select[FhirResource]:
    stmt = select(FhirResource).where(FhirResource.resource_type == resource_type)
    # Parameters AND together, the values of one parameter OR (http://hl7.org/fhir/R4/search.html#combining).
    for param, alternatives in criteria:
        stmt = stmt.where(
            FhirResource.resource_id.in_(
                select(FhirSearchIndex.resource_id).where(
                    FhirSearchIndex.resource_type == resource_type,
                    FhirSearchIndex.param == param,
                    FhirSearchIndex.value.in_(list(alternatives)),
                )
            )
        )
    return stmt


def search(
    session: Session,
    resource_type: str,
    criteria: Sequence[Criterion],
    *,
    limit: int | None = None,
    offset: int = 0,
) -> list[fhir.Resource]:
    """The resources matching every criterion, newest `_lastUpdated` first."""
    stmt = (
        _matching(resource_type, criteria)
        .order_by(FhirResource.last_updated.desc(), FhirResource.resource_id)
        .offset(offset)
        .limit(limit)
    )
    return [fhir.parse(row.content) for row in session.scalars(stmt)]


def count(session: Session, resource_type: str, criteria: Sequence[Criterion]) -> int:
    """How many resources match every criterion."""
    inner = _matching(resource_type, criteria).subquery()
    return session.scalar(select(func.count()).select_from(inner)) or 0


def references(session: Session, resource_type: str, resource_ids: Sequence[str], param: str) -> list[str]:
    """The "Type/id" values of a reference parameter of these resources (for _include)."""
    if not resource_ids:
        return []
    stmt = (
        select(FhirSearchIndex.value)
        .where(
            FhirSearchIndex.resource_type == resource_type,
            FhirSearchIndex.resource_id.in_(list(resource_ids)),
            FhirSearchIndex.param == param,
        )
        .distinct()
        .order_by(FhirSearchIndex.value)
    )
    return list(session.scalars(stmt))


def read_references(session: Session, refs: Sequence[str]) -> list[fhir.Resource]:
    """The current versions of these "Type/id" references, skipping the ones not stored."""
    found = []
    for ref in refs:
        resource_type, _, resource_id = ref.partition("/")
        row = session.get(FhirResource, (resource_type, resource_id))
        if row is not None:
            found.append(fhir.parse(row.content))
    return found
