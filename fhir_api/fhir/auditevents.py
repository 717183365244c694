"""The audit trail as FHIR AuditEvent resources, made on the fly from audit_events rows, and searched in SQL.

http://hl7.org/fhir/R4/auditevent.html. The rows stay the one tamper-evident record (audit.log);
nothing is copied into the FHIR store. Search parameters (auditevent.html#search): `date`,
`agent`, `entity`, `entity-identifier`, `patient`, `type`, `subtype`, `action`, `outcome` and
`_id`, with `_count`, `_total` and newest-first keyset pages.
"""

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, ColumnElement, and_, false, func, or_, select, type_coerce
from sqlalchemy.orm import Session

from audit.atna import EVENT_NAMES, SUBTYPE_SYSTEM
from storage.fhir import criteria
from storage import fhir
from storage.errors import InvalidSearch
from storage.fhir.systems import DCM_SYSTEM, DICOM_UID_SYSTEM
from fhir_api.fhir.search import (
    COUNT,
    CURSOR,
    DEFAULT_COUNT,
    FORMAT_PARAMS,
    MAX_COUNT,
    TOTAL,
    Cursor,
    decode_cursor,
)
from storage.tables.audit import AuditEvent

RESOURCE_TYPE = "AuditEvent"
# Who acted (agent_who) and on what (entity_what) when that is not a FHIR reference or a DICOM UID.
AGENT_SYSTEM = "urn:doctorai:agent"
ENTITY_SYSTEM = "urn:doctorai:entity"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
# http://hl7.org/fhir/R4/valueset-network-type.html: 2 is an IP address.
_NETWORK_IP = "2"
_REFERENCE = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?")
_UID = re.compile(r"[0-9]+(\.[0-9]+)+")
# Detail keys that become entities or the query rather than entity details.
_STRUCTURED = ("query", "patient", "resources", "study_uid")

# name -> (FHIR search type, documentation), for the CapabilityStatement and the parser.
SEARCH_PARAMS: dict[str, tuple[str, str]] = {
    "_id": ("token", "The record's number in the audit chain"),
    "date": ("date", "When the event was recorded"),
    "agent": ("reference", "Who acted: a client id, ae:<AE title>, model:<name>:<version>, or a process name"),
    "entity": ("reference", "What the event was about, as Type/id (versions included)"),
    "entity-identifier": ("token", "What the event was about, as an identifier (DICOM UIDs as urn:oid:...)"),
    "patient": ("reference", "The patient whose data was read, searched or changed"),
    "type": ("token", "DICOM audit event type (DCM 1101xx, PS3.16 CID 400)"),
    "subtype": ("token", "The engine step (instance-stored, resource-read, resource-searched, ...)"),
    "action": ("token", "C, R, U, D or E"),
    "outcome": ("token", "0 success, 4 minor, 8 serious, 12 major failure"),
}
_DEFINITIONS = {
    name: f"http://hl7.org/fhir/SearchParameter/AuditEvent-{name}"
    for name in ("date", "agent", "entity", "patient", "type", "subtype", "action", "outcome")
}


def definition(name: str) -> str | None:
    """The canonical SearchParameter of a parameter, when it is a standard one."""
    return _DEFINITIONS.get(name)


@dataclass(frozen=True)
class AuditQuery:
    """A parsed AuditEvent search: SQL conditions, page size and position, and what was ignored."""

    conditions: tuple[ColumnElement[bool], ...]
    count: int = DEFAULT_COUNT
    before_id: int | None = None
    total: bool = True
    accepted: tuple[tuple[str, str], ...] = ()
    unknown: tuple[str, ...] = ()


# --- rows as resources ---------------------------------------------------------------------


def _what(value: str) -> fhir.Reference:
    if _REFERENCE.fullmatch(value):
        return fhir.Reference(reference=value)
    if _UID.fullmatch(value):
        return fhir.Reference(identifier=fhir.Identifier(system=DICOM_UID_SYSTEM, value=f"urn:oid:{value}"))
    return fhir.Reference(identifier=fhir.Identifier(system=ENTITY_SYSTEM, value=value))


def _coding(system: str, code: str, display: str) -> fhir.Coding:
    return fhir.Coding(system=system, code=code, display=display)


def _entities(row: AuditEvent) -> list[fhir.AuditEventEntity]:
    detail = row.detail if isinstance(row.detail, dict) else {}
    rest = [
        fhir.AuditEventEntityDetail(type=key, valueString=str(value))
        for key, value in sorted(detail.items())
        if key not in _STRUCTURED and value != ""
    ]
    entities = []
    if "query" in detail:
        # A search: the query entity (object-role 24) carries the query string, base64 (auditevent.html).
        entities.append(
            fhir.AuditEventEntity(
                what=_what(row.entity_what),
                type=_coding(_ENTITY_TYPE, "2", "System Object"),
                role=_coding(_OBJECT_ROLE, "24", "Query"),
                query=base64.b64encode(str(detail["query"]).encode()),
                detail=rest or None,
            )
        )
        for reference in filter(None, str(detail.get("resources", "")).split(",")):
            entities.append(
                fhir.AuditEventEntity(
                    what=_what(reference),
                    type=_coding(_ENTITY_TYPE, "2", "System Object"),
                    role=_coding(_OBJECT_ROLE, "4", "Domain Resource"),
                )
            )
    elif row.entity_what:
        entities.append(fhir.AuditEventEntity(what=_what(row.entity_what), detail=rest or None))
    study = str(detail.get("study_uid", ""))
    if study and study != row.entity_what:
        entities.append(fhir.AuditEventEntity(what=_what(study), type=_coding(_ENTITY_TYPE, "2", "System Object")))
    patient = str(detail.get("patient", ""))
    if patient:
        entities.append(
            fhir.AuditEventEntity(
                what=_what(patient), type=_coding(_ENTITY_TYPE, "1", "Person"), role=_coding(_OBJECT_ROLE, "1", "Patient")
            )
        )
    return entities


def to_resource(row: AuditEvent, *, source_id: str, site: str) -> fhir.AuditEvent:
    """The AuditEvent resource of one audit row (the row's number is its id; records never change)."""
    detail = row.detail if isinstance(row.detail, dict) else {}
    agent = fhir.AuditEventAgent(
        who=fhir.Reference(identifier=fhir.Identifier(system=AGENT_SYSTEM, value=row.agent_who), display=row.agent_who),
        requestor=True,
        network=fhir.AuditEventAgentNetwork(address=row.agent_address, type=_NETWORK_IP) if row.agent_address else None,
    )
    failure = row.outcome != "0" and (detail.get("reason") or detail.get("error"))
    return fhir.AuditEvent(
        id=str(row.id),
        meta=fhir.Meta(versionId="1", lastUpdated=row.recorded_at),
        type=_coding(DCM_SYSTEM, row.type_code, EVENT_NAMES.get(row.type_code, row.type_code)),
        subtype=[fhir.Coding(system=SUBTYPE_SYSTEM, code=row.subtype)],
        action=row.action,
        recorded=row.recorded_at,
        outcome=row.outcome,
        outcomeDesc=str(failure) if failure else None,
        agent=[agent],
        source=fhir.AuditEventSource(
            observer=fhir.Reference(display=source_id),
            site=site or None,
            type=[_coding(_SOURCE_TYPE, "4", "Application Server")],
        ),
        entity=_entities(row) or None,
    )


# --- search --------------------------------------------------------------------------------


def _detail(key: str) -> Any:
    # JSON_EXTRACT on SQLite, ->> on PostgreSQL: the same expression on both.
    return type_coerce(AuditEvent.detail, JSON)[key].as_string()


def _codes(raw: str, system: str | None = None) -> list[str]:
    found = []
    for piece in criteria.split_values(raw):
        token_system, bar, code = piece.rpartition("|")
        if bar and system is not None and token_system not in ("", system):
            continue
        if code:
            found.append(code)
    return found


def _entity_match(value: str) -> ColumnElement[bool]:
    # A resource matches its reads ("Type/id") and its writes ("Type/id/_history/n").
    column = AuditEvent.entity_what
    return or_(column == value, column.startswith(f"{value}/_history/", autoescape=True))


def _uid(value: str) -> str:
    return value.removeprefix("urn:oid:")


def _condition(name: str, modifier: str, raw: str) -> ColumnElement[bool] | None:
    values = [v.strip() for v in criteria.split_values(raw) if v.strip()]
    if not values:
        return None
    if name == "date":
        dates = [criteria.date_value(v) for v in values]
        return or_(false(), *(criteria.date_test(AuditEvent.recorded_at, AuditEvent.recorded_at, d) for d in dates))
    if name == "_id":
        return AuditEvent.id.in_([int(v) for v in values if v.isdigit()])
    if name == "agent":
        who = [_codes(v)[0] if modifier == "identifier" and _codes(v) else v for v in values]
        return AuditEvent.agent_who.in_(who)
    if name == "entity":
        return or_(false(), *(_entity_match(v) for v in values))
    if name == "entity-identifier":
        uids = [_uid(code) for v in values for code in _codes(v)]
        return or_(AuditEvent.entity_what.in_(uids), _detail("study_uid").in_(uids))
    if name == "patient":
        patients = [v if v.startswith("Patient/") else f"Patient/{v}" for v in values]
        return or_(_detail("patient").in_(patients), *(_entity_match(p) for p in patients))
    column = {"type": AuditEvent.type_code, "subtype": AuditEvent.subtype, "action": AuditEvent.action,
              "outcome": AuditEvent.outcome}[name]
    system = {"type": DCM_SYSTEM, "subtype": SUBTYPE_SYSTEM}.get(name)
    return column.in_([c for v in values for c in _codes(v, system)])


def parse_query(items: Sequence[tuple[str, str]], *, strict: bool) -> AuditQuery:
    """Parse AuditEvent search parameters; unknown ones are reported, or refused when `strict`."""
    conditions: list[ColumnElement[bool]] = []
    accepted: list[tuple[str, str]] = []
    unknown: list[str] = []
    count, before_id, total = DEFAULT_COUNT, None, True
    for key, raw in items:
        name, _, modifier = key.partition(":")
        value = raw.strip()
        if key in FORMAT_PARAMS:
            continue
        if key == COUNT:
            if not value.isdigit():
                raise InvalidSearch(f"_count must be a whole number, not {value!r}")
            count = min(int(value), MAX_COUNT)
        elif key == CURSOR:
            cursor = decode_cursor(value)
            if cursor.direction != "next" or len(cursor.key) != 1 or not isinstance(cursor.key[0], int):
                raise InvalidSearch(f"not a valid {CURSOR} value")
            before_id = cursor.key[0]
            continue
        elif key == TOTAL and value in ("none", "estimate", "accurate"):
            total = value != "none"
        elif name in SEARCH_PARAMS and modifier in (("", "identifier") if name == "agent" else ("",)):
            condition = _condition(name, modifier, value)
            if condition is not None:
                conditions.append(condition)
        else:
            unknown.append(key)
            continue
        accepted.append((key, raw))
    if unknown and strict:
        raise InvalidSearch(f"unsupported search parameters: {', '.join(unknown)}")
    return AuditQuery(tuple(conditions), count, before_id, total, tuple(accepted), tuple(unknown))


@dataclass(frozen=True)
class AuditPage:
    """One page of audit rows, newest first, how many match, and where the next page starts."""

    rows: list[AuditEvent]
    total: int | None
    next_cursor: Cursor | None


def search(session: Session, query: AuditQuery) -> AuditPage:
    """The rows matching every condition, newest first (ids grow with the chain)."""
    where = and_(*query.conditions) if query.conditions else None
    stmt = select(AuditEvent)
    if where is not None:
        stmt = stmt.where(where)
    total = None
    if query.total:
        total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    if query.before_id is not None:
        stmt = stmt.where(AuditEvent.id < query.before_id)
    rows = list(session.scalars(stmt.order_by(AuditEvent.id.desc()).limit(query.count + 1)))
    more = len(rows) > query.count
    rows = rows[: query.count]
    next_cursor = Cursor("next", (rows[-1].id,)) if more and rows else None
    return AuditPage(rows=rows, total=total, next_cursor=next_cursor)


def read(session: Session, record_id: str) -> AuditEvent | None:
    """One audit row by its id, None when there is none."""
    return session.get(AuditEvent, int(record_id)) if record_id.isdigit() else None
