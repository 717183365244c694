"""Write interactions on the store: create, update, delete and their conditional forms (http://hl7.org/fhir/R4/http.html).

Each runs in the caller's transaction and writes, with the change, a `fhir.received` event
to the outbox and an audit record, so that a 201 means all three are committed together
(DESIGN.md section 5). Routes and transaction Bundles both call these functions.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from audit import log as audit_log
from audit.records import RESOURCE_CREATED, RESOURCE_DELETED, RESOURCE_UPDATED, AuditRecord, Hop
from storage.fhir import criteria, store
from storage import fhir
from fhir_api.errors import BadRequest, PreconditionFailed, Unprocessable
from storage.fhir.references import patient_reference
from storage.fhir.subscriptions import watch
from integration import topics
from integration.messages import FhirReceived
from storage.errors import InvalidSearch
from storage.outbox import add_event
from storage.tables.fhir import FhirResource

# The payload types a rest-hook channel may ask for; XML is not served (http.html#mime-type).
_JSON_PAYLOADS = ("application/fhir+json", "application/json")


@dataclass(frozen=True)
class Actor:
    """Who makes a change, from where, and the correlation id its records share."""

    client_id: str
    address: str
    correlation_id: str


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


def version_from_etag(value: str) -> int:
    """The version an If-Match header names (W/"3" or "3"); BadRequest when it names none."""
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise BadRequest(f"If-Match must name a version, like W/\"3\", not {value!r}")
    return int(text)


def find(session: Session, resource_type: str, query: str) -> list[str]:
    """The ids of resources matching a conditional interaction's search (at most 2 are needed)."""
    found = criteria.parse_all(resource_type, query)
    if not found:
        raise PreconditionFailed(f"a conditional interaction on {resource_type} needs search criteria")
    stmt = select(FhirResource.resource_id).where(FhirResource.resource_type == resource_type)
    for criterion in found:
        stmt = stmt.where(criteria.condition(resource_type, criterion))
    return list(session.scalars(stmt.limit(2)))


def _prepare(resource: fhir.Resource) -> fhir.Resource:
    # Server rules beyond the R4 model: what we can deliver for a Subscription (subscription.html).
    if not isinstance(resource, fhir.Subscription):
        return resource
    channel = resource.channel
    if channel is None or channel.type != "rest-hook" or not channel.endpoint:
        raise Unprocessable("only rest-hook Subscription channels with an endpoint are supported")
    if channel.payload and channel.payload.split(";")[0].strip() not in _JSON_PAYLOADS:
        raise Unprocessable(f"unsupported Subscription payload {channel.payload!r}: use application/fhir+json")
    if not all(":" in (h or "") for h in channel.header or []):
        raise Unprocessable("Subscription.channel.header values must be 'Name: value'")
    try:
        watch(resource)
    except InvalidSearch as exc:
        raise Unprocessable(f"Subscription.criteria: {exc}") from exc
    if resource.status in ("requested", "error"):
        # The server activates a requested subscription once it accepts the criteria.
        return resource.model_copy(update={"status": "active", "error": None})
    return resource


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
    if if_none_exist:
        matches = find(session, resource_type, if_none_exist.partition("?")[2] or if_none_exist)
        if len(matches) > 1:
            raise PreconditionFailed(f"If-None-Exist matches several {resource_type} resources")
        if matches:
            return _existing(session, resource_type, matches[0])
    resource = _prepare(resource).model_copy(update={"id": assigned_id or new_id()})
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
    if if_match is not None:
        wanted = version_from_etag(if_match)
        if current is None or current.version_id != wanted:
            have = "none" if current is None else f"version {current.version_id}"
            raise PreconditionFailed(f"If-Match names version {wanted}, the server holds {have}")
    before = current.version_id if current is not None else None
    written = _stored(session, _prepare(resource), 200 if current is not None else 201)
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
    matches = find(session, resource_type, query)
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
    version = store.delete(session, resource_type, resource_id)
    written = Written(204, resource_type, resource_id, version, None)
    if version is not None:
        _record(session, RESOURCE_DELETED, "delete", written, actor)
    return written


def conditional_delete(session: Session, resource_type: str, query: str, *, actor: Actor) -> Written:
    """DELETE [type]?search (http.html#cdelete): the one match, nothing for none, 412 for several."""
    matches = find(session, resource_type, query)
    if len(matches) > 1:
        raise PreconditionFailed(f"the conditional delete matches several {resource_type} resources")
    if not matches:
        return Written(204, resource_type, "", None, None)
    return delete(session, resource_type, matches[0], actor=actor)

