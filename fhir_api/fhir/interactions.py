"""Write interactions on the store: create, update, delete and their conditional forms (http://hl7.org/fhir/R4/http.html).

Each runs in the caller's transaction and writes, with the change, a `fhir.received` event
to the outbox and an audit record, so that a 201 means all three are committed together
(DESIGN.md section 5). Routes and transaction Bundles both call these functions.
"""

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from audit import log as audit_log
from audit.records import RESOURCE_CREATED, RESOURCE_DELETED, RESOURCE_UPDATED, AuditRecord, Hop
from storage.fhir import criteria, store
from storage import fhir
from fhir_api.errors import BadRequest, Forbidden, PreconditionFailed
from fhir_api.fhir import disclosures, subscription_rules
from fhir_api.fhir.actors import Actor
from storage.fhir.references import patient_reference
from integration import topics
from integration.messages import FhirReceived
from storage.outbox import add_event
from storage.tables.fhir import FhirResource

@dataclass(frozen=True)
class Written:
    """The outcome of a write: HTTP status, the stored resource (None after a delete) and its version."""

    status: int
    resource_type: str
    resource_id: str
    version: int | None
    resource: fhir.Resource | None
    last_modified: datetime | None = None

    @property
    def location(self) -> str:
        """ "Type/id/_history/version", the Location of a create or update."""
        return f"{self.resource_type}/{self.resource_id}/_history/{self.version}"


def new_id() -> str:
    """A server-assigned logical id."""
    return str(uuid.uuid4())


# Version ids are the store's own counters: decimal digits that a SQL BIGINT holds.
_VERSION = re.compile(r"[0-9]{1,18}")


def version_number(text: str) -> int | None:
    """The version a vread URL, ETag or page key names; None when it names none this store could hold."""
    return int(text) if _VERSION.fullmatch(text) else None


def version_from_etag(value: str) -> int:
    """The version an If-Match header names (W/"3" or "3"); BadRequest when it names none."""
    number = version_number(value.strip().removeprefix("W/").strip('"'))
    if number is None:
        raise BadRequest(f"If-Match must name a version, like W/\"3\", not {value[:40]!r}")
    return number


def find(session: Session, resource_type: str, query: str, actor: Actor) -> list[str]:
    """The ids of resources matching a conditional interaction's search (at most 2 are needed).

    A chained criterion searches its target type, which the token must be able to read.
    """
    found = criteria.parse_all(resource_type, query)
    if not found:
        raise PreconditionFailed(f"a conditional interaction on {resource_type} needs search criteria")
    for kind in {c.target for c in found if c.chained is not None}:
        if not (actor.may(kind, "s") or actor.may(kind, "r")):
            raise Forbidden(f"the token's scopes do not allow searching {kind}, which the conditions chain to")
    stmt = select(FhirResource.resource_id).where(FhirResource.resource_type == resource_type)
    for criterion in found:
        stmt = stmt.where(criteria.condition(resource_type, criterion))
    return list(session.scalars(stmt.limit(2)))


def _prepare(session: Session, resource: fhir.Resource, actor: Actor) -> fhir.Resource:
    if not isinstance(resource, fhir.Subscription):
        return resource
    current = session.get(FhirResource, ("Subscription", resource.id)) if resource.id else None
    return subscription_rules.prepare(resource, actor, fhir.parse(current.content) if current is not None else None)


def _require(actor: Actor, resource_type: str, letter: str, why: str) -> None:
    if not actor.may(resource_type, letter):
        raise Forbidden(f"{why} needs the scope '{letter}' on {resource_type}")


def _record(session: Session, hop: Hop, interaction: str, written: Written, actor: Actor) -> None:
    add_event(
        session,
        topic=topics.FHIR_RECEIVED,
        key=f"{written.resource_type}/{written.resource_id}",
        message=FhirReceived(
            correlation_id=actor.correlation_id,
            resource_type=written.resource_type,
            resource_id=written.resource_id,
            version_id=written.version or 0,
            interaction=interaction,  # type: ignore[arg-type]
            client_id=actor.client_id,
        ),
    )
    # The patient whose record changed, for AuditEvent?patient= (fhir_api/fhir/auditevents.py).
    patient = patient_reference(written.resource) if written.resource is not None else ""
    audit_log.append(
        session,
        AuditRecord(
            hop=hop,
            correlation_id=actor.correlation_id,
            agent_who=actor.client_id,
            agent_address=actor.address,
            entity_what=f"{written.resource_type}/{written.resource_id}/_history/{written.version}",
            detail={"patient": patient} if patient else {},
        ),
    )


def _stored(session: Session, resource: fhir.Resource, status: int) -> Written:
    version = store.save(session, resource)
    stored = store.read(session, resource.get_resource_type(), resource.id or "")
    return Written(
        status=status,
        resource_type=resource.get_resource_type(),
        resource_id=resource.id or "",
        version=version,
        resource=stored,
        last_modified=stored.meta.lastUpdated if stored.meta else None,
    )


def _existing(session: Session, resource_type: str, resource_id: str) -> Written:
    found = store.read(session, resource_type, resource_id)
    version = int(found.meta.versionId) if found.meta and found.meta.versionId else None
    return Written(200, resource_type, resource_id, version, found, found.meta.lastUpdated if found.meta else None)


def create(
    session: Session, resource: fhir.Resource, *, actor: Actor, if_none_exist: str | None = None, assigned_id: str = ""
) -> Written:
    """Create with a server-assigned id (any id sent is ignored, http.html#create); 201.

    With If-None-Exist: an existing single match is returned with 200 and nothing is created;
    several matches are a 412 (http.html#ccreate).
    """
    resource_type = resource.get_resource_type()
    _require(actor, resource_type, "c", "creating a resource")
    if if_none_exist:
        # The match is returned: that is a read, scoped and audited as one (issue 18).
        _require(actor, resource_type, "r", "If-None-Exist, which returns the match,")
        matches = find(session, resource_type, if_none_exist.partition("?")[2] or if_none_exist, actor)
        if len(matches) > 1:
            raise PreconditionFailed(f"If-None-Exist matches several {resource_type} resources")
        if matches:
            existing = _existing(session, resource_type, matches[0])
            if existing.resource is not None:
                disclosures.audit_read(session, existing.resource, who=actor.client_id, address=actor.address)
            return existing
    resource = _prepare(session, resource.model_copy(update={"id": None}), actor)
    resource = resource.model_copy(update={"id": assigned_id or new_id()})
    written = _stored(session, resource, 201)
    _record(session, RESOURCE_CREATED, "create", written, actor)
    return written


def update(
    session: Session,
    resource_type: str,
    resource_id: str,
    resource: fhir.Resource,
    *,
    actor: Actor,
    if_match: str | None = None,
) -> Written:
    """Update (or create with the client's id, http.html#upsert): 200, or 201 when it did not exist."""
    if resource.get_resource_type() != resource_type:
        raise BadRequest(f"the body is a {resource.get_resource_type()}, the URL names {resource_type}")
    if resource.id != resource_id:
        raise BadRequest(f"the body's id ({resource.id!r}) must be the id in the URL ({resource_id!r})")
    current = session.get(FhirResource, (resource_type, resource_id))
    if current is None:
        _require(actor, resource_type, "c", "an update that creates the resource")
    if if_match is not None:
        wanted = version_from_etag(if_match)
        if current is None or current.version_id != wanted:
            have = "none" if current is None else f"version {current.version_id}"
            raise PreconditionFailed(f"If-Match names version {wanted}, the server holds {have}")
    before = current.version_id if current is not None else None
    written = _stored(session, _prepare(session, resource, actor), 200 if current is not None else 201)
    if written.version != before:
        hop, interaction = (RESOURCE_UPDATED, "update") if current is not None else (RESOURCE_CREATED, "create")
        _record(session, hop, interaction, written, actor)
    return written


def conditional_update(
    session: Session,
    resource_type: str,
    query: str,
    resource: fhir.Resource,
    *,
    actor: Actor,
    if_match: str | None = None,
) -> Written:
    """PUT [type]?search (http.html#cond-update): create, update the one match, or 412 for several."""
    matches = find(session, resource_type, query, actor)
    if len(matches) > 1:
        raise PreconditionFailed(f"the conditional update matches several {resource_type} resources")
    if not matches:
        if not resource.id:
            return create(session, resource, actor=actor)
        if store.exists(session, resource_type, resource.id):
            raise BadRequest(f"{resource_type}/{resource.id} exists but does not match the conditions")
        return update(session, resource_type, resource.id, resource, actor=actor)
    if resource.id and resource.id != matches[0]:
        raise BadRequest(f"the body's id ({resource.id!r}) is not the matching resource's ({matches[0]!r})")
    return update(
        session, resource_type, matches[0], resource.model_copy(update={"id": matches[0]}), actor=actor, if_match=if_match
    )


def delete(session: Session, resource_type: str, resource_id: str, *, actor: Actor) -> Written:
    """Delete (http.html#delete): history keeps the versions; deleting what is not there is not an error."""
    if resource_type == "Subscription":
        current = session.get(FhirResource, (resource_type, resource_id))
        if current is not None:
            subscription_rules.require_owner(fhir.parse(current.content), actor)
    version = store.delete(session, resource_type, resource_id)
    written = Written(204, resource_type, resource_id, version, None)
    if version is not None:
        _record(session, RESOURCE_DELETED, "delete", written, actor)
    return written


def conditional_delete(session: Session, resource_type: str, query: str, *, actor: Actor) -> Written:
    """DELETE [type]?search (http.html#cdelete): the one match, nothing for none, 412 for several."""
    matches = find(session, resource_type, query, actor)
    if len(matches) > 1:
        raise PreconditionFailed(f"the conditional delete matches several {resource_type} resources")
    if not matches:
        return Written(204, resource_type, "", None, None)
    return delete(session, resource_type, matches[0], actor=actor)

