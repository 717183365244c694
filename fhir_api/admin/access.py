"""Who may use the admin API and what they did: the role table, the actor of a request, audited changes.

Every route needs a credential (the Gate refuses requests without one before they get here): a
bearer token carrying roles, or a console session, whose person has one role. The role table
(fhir_api/auth/roles.py) says which roles may read (GET) and change each area (the first segment
of the path); the console shows each person only what the table allows them, and `authorize`
refuses the rest anyway. Every change writes one audit record, with who made it, from
where, on what, and the JSON before and after (secrets masked), in the transaction of the change.
Route modules import this module, never the application.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from audit import log as audit_log
from audit.records import AuditRecord, Hop
from fhir_api.auth.roles import CHANGERS, READERS, area_of, may
from fhir_api.auth.tokens import Principal
from fhir_api.deps import PrincipalDep, client_address
from fhir_api.errors import Forbidden

# RFC 9110 section 9.2.1: the safe methods, which only read.
READ_METHODS = frozenset({"GET", "HEAD"})
# Option keys whose values are credentials: never answered, never written to the audit trail.
SECRET_KEYS = frozenset({"token", "password", "secret"})
MASK = "********"
# Correlation id of admin records that belong to no study.
ADMIN_CORRELATION = "admin"

def authorize(request: Request, principal: PrincipalDep) -> Principal:
    """The caller, when the role table lets one of its roles make this request."""
    relative = request.url.path.removeprefix(request.scope.get("root_path", ""))
    area = area_of(relative)
    change = request.method not in READ_METHODS
    if not may(set(principal.roles), area=area, change=change):
        verb = "change" if change else "read"
        allowed = sorted((CHANGERS if change else READERS).get(area, frozenset()))
        needs = " or ".join(allowed) if allowed else "no role"
        raise Forbidden(f"to {verb} {area or 'the admin API'} needs the {needs} role")
    return principal


@dataclass(frozen=True)
class Actor:
    """Who makes an admin request, from where, and on what (method and path), for the audit trail."""

    subject: str
    address: str
    method: str
    path: str


def get_actor(request: Request, principal: Annotated[Principal, Depends(authorize)]) -> Actor:
    """The authorized caller of this request."""
    # The full path (mounted applications see it whole in scope["path"], root_path included).
    return Actor(
        subject=principal.subject, address=client_address(request), method=request.method, path=request.url.path
    )


ActorDep = Annotated[Actor, Depends(get_actor)]


def mask(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with every non-empty secret replaced by a fixed mask."""
    return {k: (MASK if k in SECRET_KEYS and v else v) for k, v in values.items()}


def audit_read(
    session: Session, actor: Actor, *, hop: Hop, correlation_id: str, detail: Mapping[str, str], entity: str = ""
) -> None:
    """Record what a person (or client) did on `entity` (default: the request's path), in the caller's
    transaction: a read of what a message or report carries, or, through `audit_change`, a change."""
    audit_log.append(
        session,
        AuditRecord(
            hop=hop,
            correlation_id=correlation_id,
            agent_who=actor.subject,
            agent_address=actor.address,
            entity_what=(entity or actor.path)[:256],
            detail=dict(detail),
        ),
    )


def audit_change(
    session: Session,
    actor: Actor,
    *,
    hop: Hop,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    correlation_id: str = ADMIN_CORRELATION,
    detail: Mapping[str, str] | None = None,
) -> None:
    """Record one admin change in the caller's transaction; `before`/`after` are masked JSON documents."""
    record_detail = {
        "method": actor.method,
        "before": json.dumps(None if before is None else mask(before), sort_keys=True, default=str),
        "after": json.dumps(None if after is None else mask(after), sort_keys=True, default=str),
        **(detail or {}),
    }
    audit_read(session, actor, hop=hop, correlation_id=correlation_id, detail=record_detail)
