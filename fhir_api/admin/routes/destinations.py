"""/admin/destinations: where studies and results are sent (DICOM, MLLP, FHIR, webhook).

A destination's settings are validated per kind (a discriminated pydantic model); credentials in
its options (token, password, secret) are never answered nor audited, only masked. A PUT that
sends the mask back keeps the stored credential, so a client may edit what a GET returned, unless
it moves the destination to another address (409: the credential must be sent again).
"""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Body, Depends, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audit.records import ADMIN_CONFIGURATION, NETWORK_CONFIGURATION
from fhir_api.admin.params import Id
from fhir_api.admin.access import MASK, SECRET_KEYS, Actor, ActorDep, audit_change, mask
from fhir_api.admin.paging import Page, Paging, page_of, sorted_by
from fhir_api.deps import EngineDep
from fhir_api.errors import InvalidState, NotFound
from integration.heartbeats import reported_open_circuits
from storage.db import read_scope, session_scope
from storage.destinations import (
    add_destination,
    delete_destination,
    destinations,
    get_destination,
    update_destination,
)
from storage.overview import queue_depths
from storage.tables.outbound import Destination

router = APIRouter(prefix="/destinations", tags=["destinations"])

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Host = Annotated[str, Field(min_length=1, max_length=256)]
Port = Annotated[int, Field(ge=1, le=65535)]
# AE titles: 1 to 16 characters, no backslash or control characters (PS3.5 6.2).
AeTitle = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[^\\\x00-\x1f]+$")]
HttpUrl = Annotated[str, Field(min_length=8, max_length=2000, pattern=r"^https?://\S+$")]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DicomOptions(_Options):
    """A DICOM node we C-STORE to (PS3.4 Annex B), with optional TLS files (PS3.15 B.1)."""

    ae_title: AeTitle = Field(description="the called AE title")
    calling_ae: AeTitle = Field("DOCTORAI", description="our AE title towards it")
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    results: Literal["", "sr"] = Field(
        "",
        description='"sr": every model result is also sent here as a DICOM Comprehensive 3D SR '
        "(TID 1500 Measurement Report) in the study it is about (results/sr_queue.py)",
    )


class MllpOptions(_Options):
    """An MLLP receiver of ORU^R01 messages."""

    ca_file: str = ""
    # The sender ("MSH-3^MSH-4" or MSH-3) whose enhanced-mode application ACKs go here (hl7_listener.acks).
    application_acks_for: Annotated[str, Field(max_length=400)] = ""


class FhirOptions(_Options):
    """An EHR's FHIR server that DiagnosticReports are POSTed to."""

    base_url: HttpUrl
    auth: Literal["none", "bearer", "basic"] = "none"
    token: str = ""
    username: str = ""
    password: str = ""

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if self.auth == "bearer" and not self.token:
            raise ValueError("auth bearer needs a token")
        if self.auth == "basic" and not (self.username and self.password):
            raise ValueError("auth basic needs a username and a password")
        return self


class WebhookOptions(_Options):
    """An HTTP endpoint; with a secret, each POST carries an HMAC-SHA256 X-DoctorAI-Signature header."""

    url: HttpUrl
    secret: str = ""


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    enabled: bool = True


class DicomDestination(_Common):
    """A DICOM node (C-STORE SCP)."""

    kind: Literal["dicom"]
    host: Host
    port: Port
    tls: bool = False
    options: DicomOptions


class MllpDestination(_Common):
    """An HL7 v2 MLLP receiver."""

    kind: Literal["mllp"]
    host: Host
    port: Port
    tls: bool = False
    options: MllpOptions = MllpOptions()


class FhirDestination(_Common):
    """A FHIR server (its address is options.base_url)."""

    kind: Literal["fhir"]
    options: FhirOptions


class WebhookDestination(_Common):
    """An HTTP webhook (its address is options.url)."""

    kind: Literal["webhook"]
    options: WebhookOptions


DestinationIn = Annotated[
    DicomDestination | MllpDestination | FhirDestination | WebhookDestination, Field(discriminator="kind")
]


class DestinationOut(BaseModel):
    """A destination as stored, credentials masked."""

    id: int
    name: str
    kind: str
    host: str
    port: int
    tls: bool
    enabled: bool
    options: dict[str, str]
    created_at: datetime
    # Its queue (deliveries and forwards) pending and dead, and whether a running integration
    # process has its circuit open (integration/outbound/circuit.py): not tried until it cools down.
    pending: int = 0
    dead: int = 0
    circuit_open: bool = False


def _document(row: Destination) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "kind": row.kind,
        "host": row.host,
        "port": row.port,
        "tls": row.tls,
        "enabled": row.enabled,
        "options": mask(row.options),
        "created_at": row.created_at,
    }


def _out(row: Destination) -> DestinationOut:
    return DestinationOut.model_validate(_document(row))


def _with_queues(session: Session, rows: list[Destination]) -> list[DestinationOut]:
    """The destinations as answered, with their queue depths and circuit state."""
    depths = queue_depths(session, destination_id=rows[0].id if len(rows) == 1 else None)
    circuits = reported_open_circuits(session, now=datetime.now(UTC))
    return [
        DestinationOut.model_validate(
            {**_document(row), **depths.get(row.id, {}), "circuit_open": row.name in circuits}
        )
        for row in rows
    ]


def _settings(body: DicomDestination | MllpDestination | FhirDestination | WebhookDestination) -> dict[str, Any]:
    """The row's columns from a validated body; kinds without host and port store none."""
    address = (
        (body.host, body.port, body.tls) if isinstance(body, DicomDestination | MllpDestination) else ("", 0, False)
    )
    options = {k: v for k, v in body.options.model_dump().items() if v != ""}
    return {
        "name": body.name,
        "kind": body.kind,
        "host": address[0],
        "port": address[1],
        "tls": address[2],
        "enabled": body.enabled,
        "options": options,
    }


def _address(settings: dict[str, Any]) -> tuple[object, ...]:
    """Where a destination's deliveries (and its credentials) go."""
    options = settings["options"]
    return (settings["kind"], settings["host"], settings["port"], options.get("base_url", ""), options.get("url", ""))


def _found(session: Session, destination_id: int) -> Destination:
    row = get_destination(session, destination_id=destination_id)
    if row is None:
        raise NotFound(f"no destination {destination_id}")
    return row


def _audit(session: Session, actor: Actor, *, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    """A destination change, audited as a network configuration change (PS3.15 A.5.3.11)."""
    audit_change(
        session, actor, hop=ADMIN_CONFIGURATION, before=before, after=after, detail={"alert_type": NETWORK_CONFIGURATION}
    )


_SORTS = ("id", "name", "kind", "host", "enabled", "created_at", "pending", "dead")


@router.get("")
def list_destinations(
    engine: EngineDep, paging: Annotated[Paging, Depends(sorted_by(_SORTS))], kind: str | None = None
) -> Page[DestinationOut]:
    """The destinations (of one kind), by id unless sorted otherwise, with their queues and circuits."""
    with read_scope(engine) as session:
        found = _with_queues(session, destinations(session, kind=kind))
    return page_of(found, paging, getattr)


@router.get("/{destination_id}")
def read_destination(destination_id: Id, engine: EngineDep) -> DestinationOut:
    """One destination, with its queue depths and circuit state."""
    with read_scope(engine) as session:
        return _with_queues(session, [_found(session, destination_id)])[0]


@router.post("", status_code=201)
def create_destination(body: Annotated[DestinationIn, Body()], engine: EngineDep, actor: ActorDep) -> DestinationOut:
    """Configure a destination (409 when the name is taken)."""
    with session_scope(engine) as session:
        row = add_destination(session, **_settings(body))
        after = _document(row)
        _audit(session, actor, before=None, after=after)
    return DestinationOut.model_validate(after)


@router.put("/{destination_id}")
def replace_destination(
    destination_id: Id, body: Annotated[DestinationIn, Body()], engine: EngineDep, actor: ActorDep
) -> DestinationOut:
    """Replace a destination's settings; a masked credential sent back keeps the stored one.

    Only for the same address: a PUT that changes where the destination is (kind, host, port,
    base_url, url) and sends a credential back masked is refused with 409, naming the credential
    to send again, so a stored token is never sent to an address it was not given for.
    """
    settings = _settings(body)
    with session_scope(engine) as session:
        row = _found(session, destination_id)
        before = _document(row)
        kept = sorted(k for k, v in settings["options"].items() if k in SECRET_KEYS and v == MASK)
        stored = {"kind": row.kind, "host": row.host, "port": row.port, "options": row.options}
        if kept and _address(settings) != _address(stored):
            raise InvalidState(
                f"the destination's address changes: send {' and '.join(kept)} again, not masked "
                "(a stored credential is only kept for the address it was given for)"
            )
        settings["options"] = {
            k: (row.options.get(k, "") if k in SECRET_KEYS and v == MASK else v) for k, v in settings["options"].items()
        }
        update_destination(session, row=row, **settings)
        after = _document(row)
        _audit(session, actor, before=before, after=after)
    return DestinationOut.model_validate(after)


def _set_enabled(destination_id: Id, enabled: bool, engine: EngineDep, actor: ActorDep) -> DestinationOut:
    with session_scope(engine) as session:
        row = _found(session, destination_id)
        before = _document(row)
        row.enabled = enabled
        after = _document(row)
        _audit(session, actor, before=before, after=after)
    return DestinationOut.model_validate(after)


@router.post("/{destination_id}/enable")
def enable_destination(destination_id: Id, engine: EngineDep, actor: ActorDep) -> DestinationOut:
    """Send to this destination again; what was queued for it is sent."""
    return _set_enabled(destination_id, True, engine, actor)


@router.post("/{destination_id}/disable")
def disable_destination(destination_id: Id, engine: EngineDep, actor: ActorDep) -> DestinationOut:
    """Stop sending to this destination; deliveries stay queued until it is enabled again."""
    return _set_enabled(destination_id, False, engine, actor)


@router.delete("/{destination_id}", status_code=204)
def remove_destination(destination_id: Id, engine: EngineDep, actor: ActorDep) -> Response:
    """Remove a destination that never had deliveries (409 otherwise: disable it instead)."""
    try:
        with session_scope(engine) as session:
            row = _found(session, destination_id)
            before = _document(row)
            delete_destination(session, row=row)
            _audit(session, actor, before=before, after=None)
    except IntegrityError:
        # Rows of other tables (forwards) still name it.
        raise InvalidState(f"destination {destination_id} is still referenced; disable it instead") from None
    return Response(status_code=204)
