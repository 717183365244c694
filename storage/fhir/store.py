"""The FHIR store: current resources, every version of them (history), and a search index, in SQL.

Writes keep three tables in step in the caller's transaction: the current row, an appended
history row (POST, PUT or DELETE), and the index rows of the current version. A change also
queues the notifications of the Subscriptions it matches, in the same transaction, so none is
lost (fhir_api/subscriptions/subscriptions.py).
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from storage.fhir import criteria, definitions
from storage import fhir
from storage.errors import ResourceGone, ResourceNotFound
from storage.fhir import subscriptions
from storage.tables.fhir import FhirResource, FhirResourceVersion, FhirSearchIndex

# http://hl7.org/fhir/R4/valueset-diagnostic-report-status.html
REPORT_STATUS_SYSTEM = "http://hl7.org/fhir/diagnostic-report-status"


@dataclass(frozen=True)
class Version:
    """One history row: which version, when, how it was made, and its resource (None once deleted)."""

    resource_type: str
    resource_id: str
    version_id: int
    last_updated: datetime
    method: str
    resource: fhir.Resource | None


@dataclass(frozen=True)
class Stored:
    """A current resource as stored: type, id and its R4 JSON text, validated when it was written."""

    resource_type: str
    id: str
    content: str

    def resource(self) -> fhir.Resource:
        """The resource as a model (parsing costs far more than passing the stored text on)."""
        return fhir.parse(self.content)


@dataclass(frozen=True)
class Disclosure:
    """What a disclosed resource is about, for its audit record: its patient and its studies."""

    reference: str
    patient: str
    studies: tuple[str, ...]


def instant_text(moment: datetime) -> str:
    """A UTC instant as sortable text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _without_version(content: str) -> str:
    data: dict[str, Any] = json.loads(content)
    meta = data.get("meta", {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    if not meta:
        data.pop("meta", None)
    return json.dumps(data, sort_keys=True)


def _last_version(session: Session, resource_type: str, resource_id: str) -> FhirResourceVersion | None:
    stmt = (
        select(FhirResourceVersion)
        .where(FhirResourceVersion.resource_type == resource_type, FhirResourceVersion.resource_id == resource_id)
        .order_by(FhirResourceVersion.version_id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def _index_rows(resource: fhir.Resource) -> list[dict[str, Any]]:
    resource_type, resource_id = resource.get_resource_type(), resource.id or ""
    return [
        {
            "resource_type": resource_type,
            "resource_id": resource_id,
            "param": v.param,
            "value": v.value,
            "system": v.system,
            "exact": v.exact,
            "low": v.low,
            "high": v.high,
        }
        for v in definitions.extract(resource)
    ]


def _index(session: Session, resource: fhir.Resource, *, replace: bool = True) -> None:
    resource_type, resource_id = resource.get_resource_type(), resource.id or ""
    if replace:
        session.execute(
            sql_delete(FhirSearchIndex)
            .where(FhirSearchIndex.resource_type == resource_type, FhirSearchIndex.resource_id == resource_id)
            .execution_options(synchronize_session=False)
        )
    rows = _index_rows(resource)
    if rows:
        # One Core executemany instead of an ORM object per row: index rows are many and never read back here.
        session.connection().execute(insert(FhirSearchIndex), rows)


def save(session: Session, resource: fhir.Resource, *, now: datetime | None = None) -> int:
    """Create or update a resource; returns its version (unchanged content keeps the current one).

    Sets meta.versionId and meta.lastUpdated, appends the history row, rewrites the index rows
    and queues matching subscription notifications.
    """
    resource_type = resource.get_resource_type()
    if not resource.id:
        raise ValueError(f"a {resource_type} needs an id to be stored")
    current = session.get(FhirResource, (resource_type, resource.id))
    if current is not None and _without_version(current.content) == _without_version(fhir.dump(resource)):
        return current.version_id
    now = now or datetime.now(UTC)
    previous = current.version_id if current is not None else None
    if previous is None:
        last = _last_version(session, resource_type, resource.id)
        previous = last.version_id if last is not None else 0
    version = previous + 1
    meta = resource.meta.model_copy() if resource.meta else fhir.Meta()
    meta.versionId = str(version)
    meta.lastUpdated = now
    stored = resource.model_copy(update={"meta": meta})
    content = fhir.dump(stored)
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
            method="POST" if version == 1 else "PUT",
        )
    )
    _index(session, stored, replace=previous > 0)
    subscriptions.enqueue_matches(session, resource_type=resource_type, resource_id=resource.id, version_id=version)
    return version


def save_many(session: Session, resources: Sequence[fhir.Resource], *, now: datetime | None = None) -> None:
    """Save many resources in one go (bulk loads): new ones with three executemany inserts, others one by one.

    Same effect as calling `save` for each: version 1 (or the next after a deletion), history,
    index rows and subscription notifications.
    """
    by_type: dict[str, list[fhir.Resource]] = {}
    for resource in resources:
        if not resource.id:
            raise ValueError(f"a {resource.get_resource_type()} needs an id to be stored")
        by_type.setdefault(resource.get_resource_type(), []).append(resource)
    now = now or datetime.now(UTC)
    for resource_type, group in by_type.items():
        ids = [r.id or "" for r in group]
        known_ids = set(
            session.scalars(
                select(FhirResourceVersion.resource_id)
                .where(FhirResourceVersion.resource_type == resource_type, FhirResourceVersion.resource_id.in_(ids))
                .distinct()
            )
        )
        repeated = {i for i in ids if ids.count(i) > 1} if len(set(ids)) < len(ids) else set()
        fresh = [r for r in group if r.id not in known_ids and r.id not in repeated]
        for resource in group:
            if resource.id in known_ids or resource.id in repeated:
                save(session, resource, now=now)
        current, history, index = [], [], []
        for resource in fresh:
            meta = resource.meta.model_copy() if resource.meta else fhir.Meta()
            meta.versionId, meta.lastUpdated = "1", now
            stored = resource.model_copy(update={"meta": meta})
            content = fhir.dump(stored)
            key = {"resource_type": resource_type, "resource_id": resource.id}
            current.append({**key, "version_id": 1, "last_updated": now, "content": content})
            history.append({**key, "version_id": 1, "last_updated": now, "content": content, "method": "POST"})
            index.extend(_index_rows(stored))
        connection = session.connection()
        for table, rows in ((FhirResource, current), (FhirResourceVersion, history), (FhirSearchIndex, index)):
            if rows:
                connection.execute(insert(table), rows)
        for resource in fresh:
            subscriptions.enqueue_matches(session, resource_type=resource_type, resource_id=resource.id or "", version_id=1)


def delete(session: Session, resource_type: str, resource_id: str, *, now: datetime | None = None) -> int | None:
    """Delete the current version (history keeps every version); returns the new version, None if absent."""
    current = session.get(FhirResource, (resource_type, resource_id))
    if current is None:
        return None
    now = now or datetime.now(UTC)
    version = current.version_id + 1
    session.delete(current)
    session.execute(
        sql_delete(FhirSearchIndex)
        .where(FhirSearchIndex.resource_type == resource_type, FhirSearchIndex.resource_id == resource_id)
        .execution_options(synchronize_session=False)
    )
    session.add(
        FhirResourceVersion(
            resource_type=resource_type,
            resource_id=resource_id,
            version_id=version,
            last_updated=now,
            content="",
            method="DELETE",
        )
    )
    session.flush()
    return version


def read(session: Session, resource_type: str, resource_id: str) -> fhir.Resource:
    """The current version of a resource; ResourceNotFound, or ResourceGone when it was deleted (http.html#read)."""
    row = session.get(FhirResource, (resource_type, resource_id))
    if row is not None:
        return fhir.parse(row.content)
    if _last_version(session, resource_type, resource_id) is not None:
        raise ResourceGone(f"{resource_type}/{resource_id} was deleted")
    raise ResourceNotFound(f"{resource_type}/{resource_id} is not known")


def vread(session: Session, resource_type: str, resource_id: str, version_id: int) -> fhir.Resource:
    """One version of a resource; ResourceNotFound, or ResourceGone for the version that recorded a delete."""
    row = session.get(FhirResourceVersion, (resource_type, resource_id, version_id))
    if row is None:
        raise ResourceNotFound(f"{resource_type}/{resource_id} has no version {version_id}")
    if row.method == "DELETE":
        raise ResourceGone(f"{resource_type}/{resource_id} version {version_id} is a deletion")
    return fhir.parse(row.content)


def known(session: Session, resource_type: str, resource_id: str) -> bool:
    """Whether the store holds any version of this resource, deleted or not."""
    return _last_version(session, resource_type, resource_id) is not None


def exists(session: Session, resource_type: str, resource_id: str) -> bool:
    """Whether the store holds a current version of this resource."""
    return session.get(FhirResource, (resource_type, resource_id)) is not None


def history(
    session: Session,
    resource_type: str,
    resource_id: str | None = None,
    *,
    since: datetime | None = None,
    before: tuple[datetime, str, int] | None = None,
    limit: int,
) -> list[Version]:
    """Versions of one resource or of a whole type, newest first (http.html#history).

    `before` is the (last_updated, id, version) of the last entry of the previous page.
    """
    h = FhirResourceVersion
    stmt = select(h).where(h.resource_type == resource_type)
    if resource_id is not None:
        stmt = stmt.where(h.resource_id == resource_id)
    if since is not None:
        stmt = stmt.where(h.last_updated >= since)
    if before is not None:
        moment, last_id, last_version = before
        stmt = stmt.where(
            (h.last_updated < moment)
            | ((h.last_updated == moment) & (h.resource_id > last_id))
            | ((h.last_updated == moment) & (h.resource_id == last_id) & (h.version_id < last_version))
        )
    stmt = stmt.order_by(h.last_updated.desc(), h.resource_id, h.version_id.desc()).limit(limit)
    return [
        Version(
            resource_type=row.resource_type,
            resource_id=row.resource_id,
            version_id=row.version_id,
            last_updated=row.last_updated,
            method=row.method,
            resource=fhir.parse(row.content) if row.content else None,
        )
        for row in session.scalars(stmt)
    ]


def search(
    session: Session, resource_type: str, params: Sequence[tuple[str, Sequence[str]]], *, limit: int | None = None
) -> list[fhir.Resource]:
    """The resources matching every (parameter, alternative values) pair, newest first.

    For code that searches the store directly; the API's search (fhir_api/fhir/search.py) adds paging,
    sorting and includes on the same criteria.
    """
    stmt = select(FhirResource.content).where(FhirResource.resource_type == resource_type)
    for name, alternatives in params:
        criterion = criteria.parse(resource_type, name, ",".join(v.replace(",", "\\,") for v in alternatives))
        if criterion is not None:
            stmt = stmt.where(criteria.condition(resource_type, criterion))
    stmt = stmt.order_by(FhirResource.last_updated.desc(), FhirResource.resource_id).limit(limit)
    return [fhir.parse(content) for content in session.scalars(stmt)]


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


def referring(session: Session, source_type: str, param: str, refs: Sequence[str]) -> list[str]:
    """The ids of `source_type` resources whose reference parameter points at one of `refs` (_revinclude)."""
    if not refs:
        return []
    stmt = (
        select(FhirSearchIndex.resource_id)
        .where(
            FhirSearchIndex.resource_type == source_type,
            FhirSearchIndex.param == param,
            FhirSearchIndex.value.in_(list(refs)),
        )
        .distinct()
        .order_by(FhirSearchIndex.resource_id)
    )
    return list(session.scalars(stmt))


def read_stored(session: Session, refs: Sequence[str]) -> list[Stored]:
    """The current versions of these "Type/id" references as stored, skipping the ones not stored."""
    found = []
    for ref in refs:
        resource_type, _, resource_id = ref.partition("/")
        row = session.get(FhirResource, (resource_type, resource_id))
        if row is not None:
            found.append(Stored(resource_type, resource_id, row.content))
    return found


# Index parameters that name a resource's patient and the ImagingStudy it is about (fhir_api/definitions.py).
_PATIENT_PARAM = "patient"
_STUDY_PARAMS = ("imaging-study", "derived-from")


def disclosures(session: Session, found: Sequence[Stored]) -> list[Disclosure]:
    """The patient and studies of each resource, read from the search index rather than the JSON.

    Same answer as references.study_ids and references.patient_reference on the parsed resources.
    """
    by_type: dict[str, list[str]] = {}
    for item in found:
        by_type.setdefault(item.resource_type, []).append(item.id)
    facts: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for resource_type, ids in by_type.items():
        # All index rows of these few resources, filtered here: a condition on the parameter
        # would lead SQLite to scan that parameter's entries of the whole type instead.
        stmt = select(FhirSearchIndex.resource_id, FhirSearchIndex.param, FhirSearchIndex.value).where(
            FhirSearchIndex.resource_type == resource_type, FhirSearchIndex.resource_id.in_(ids)
        )
        for resource_id, param, value in session.execute(stmt):
            if param != _PATIENT_PARAM and param not in _STUDY_PARAMS:
                continue
            patients, studies = facts.setdefault((resource_type, resource_id), ([], []))
            if param == _PATIENT_PARAM:
                patients.append(value)
            elif value.startswith("ImagingStudy/"):
                studies.append(value.removeprefix("ImagingStudy/"))
    answer = []
    for item in found:
        patients, studies = facts.get((item.resource_type, item.id), ([], []))
        if item.resource_type == "Patient":
            patients = [f"Patient/{item.id}"]
        if item.resource_type == "ImagingStudy":
            studies = [item.id]
        answer.append(
            Disclosure(f"{item.resource_type}/{item.id}", min(patients, default=""), tuple(sorted(set(studies))))
        )
    return answer


def reindex_missing(session: Session) -> int:
    """Rebuild the index rows of resources that have none (after a migration emptied the index)."""
    indexed = select(FhirSearchIndex.resource_id).where(FhirSearchIndex.resource_type == FhirResource.resource_type)
    stmt = select(FhirResource).where(~FhirResource.resource_id.in_(indexed.where(
        FhirSearchIndex.resource_id == FhirResource.resource_id
    )))
    count = 0
    for row in session.scalars(stmt):
        resource = fhir.parse(row.content)
        if definitions.extract(resource):
            _index(session, resource)
            count += 1
    return count


def total_versions(session: Session, resource_type: str) -> int:
    """How many history rows a type has (the total of a type-level history)."""
    stmt = select(func.count()).select_from(FhirResourceVersion).where(FhirResourceVersion.resource_type == resource_type)
    return session.scalar(stmt) or 0
