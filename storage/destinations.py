"""Destinations: where studies and results are sent (kinds dicom, mllp, fhir, webhook), configured by the admin."""

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.tables.outbound import Delivery, Destination


class DestinationExists(ValueError):
    """A destination with this name is already configured."""


class DestinationInUse(ValueError):
    """The destination has deliveries (their history would point nowhere); disable it instead."""


def add_destination(
    session: Session,
    *,
    name: str,
    kind: str,
    host: str,
    port: int,
    tls: bool = False,
    enabled: bool = True,
    options: dict[str, str] | None = None,
) -> Destination:
    """Configure a new destination (enabled unless told otherwise)."""
    if session.scalar(select(Destination.id).where(Destination.name == name)) is not None:
        raise DestinationExists(name)
    row = Destination(
        name=name,
        kind=kind,
        host=host,
        port=port,
        tls=tls,
        enabled=enabled,
        options=dict(options or {}),
        created_at=datetime.now(UTC),
    )
    session.add(row)
    session.flush()
    return row


def destination_by_name(session: Session, *, name: str) -> Destination | None:
    """The destination called `name`, if configured."""
    return session.scalar(select(Destination).where(Destination.name == name))


def destinations(session: Session, *, kind: str | None = None, enabled_only: bool = False) -> list[Destination]:
    """Configured destinations, by id."""
    stmt = select(Destination).order_by(Destination.id)
    if kind is not None:
        stmt = stmt.where(Destination.kind == kind)
    if enabled_only:
        stmt = stmt.where(Destination.enabled.is_(True))
    return list(session.scalars(stmt))


def get_destination(session: Session, *, destination_id: int) -> Destination | None:
    """One destination, or None."""
    return session.get(Destination, destination_id)


def update_destination(
    session: Session,
    *,
    row: Destination,
    name: str,
    kind: str,
    host: str,
    port: int,
    tls: bool,
    enabled: bool,
    options: dict[str, str],
) -> Destination:
    """Replace a destination's settings; its queued deliveries stay queued for it."""
    clash = select(Destination.id).where(Destination.name == name, Destination.id != row.id)
    if session.scalar(clash) is not None:
        raise DestinationExists(name)
    row.name, row.kind, row.host, row.port, row.tls, row.enabled = name, kind, host, port, tls, enabled
    row.options = dict(options)
    session.flush()
    return row


def delete_destination(session: Session, *, row: Destination) -> None:
    """Remove a destination that has no deliveries; one with history is disabled instead (DestinationInUse)."""
    used = session.scalar(select(Delivery.id).where(Delivery.destination_id == row.id).limit(1))
    if used is not None:
        raise DestinationInUse(f"destination {row.name} has deliveries; disable it instead")
    session.delete(row)
    session.flush()
