"""Deliver queued subscription notifications over rest-hook channels, retrying with backoff until acknowledged.

http://hl7.org/fhir/R4/subscription.html, rest-hook: with no payload the server POSTs to the
endpoint with no body; with a payload it sends the resource as an update, PUT
[endpoint]/[type]/[id], in that MIME type. Channel headers go on every request. A 2xx answer
acknowledges the notification: it is marked delivered in the database and never sent again.
Anything else leaves it queued, retried after 5 s, 10 s, 20 s ... up to the configured
maximum, for as long as it takes; the Subscription shows status "error" and why meanwhile.
"""

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from storage import fhir
from fhir_api import metrics
from storage.fhir import store
from fhir_api.config import ApiSettings
from integration.backoff import backoff
from storage.errors import ResourceGone, ResourceNotFound
from storage.fhir import subscriptions
from storage.db import session_scope
from storage.tables.fhir import FhirResourceVersion, SubscriptionDelivery
from integration import process

log = logging.getLogger(__name__)
# A deliverer holds a claimed row this long; after that another may retry it (e.g. after a crash).
LEASE = timedelta(minutes=2)


@dataclass(frozen=True)
class Notification:
    """What to send for one queued row, or why nothing is owed any more."""

    delivery_id: int
    attempts: int
    subscription: fhir.Subscription | None
    method: str = "POST"
    url: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    dropped: str = ""


def _notification(session: Session, row: SubscriptionDelivery, now: datetime) -> Notification:
    try:
        subscription = store.read(session, "Subscription", row.subscription_id)
    except (ResourceNotFound, ResourceGone):
        return Notification(row.id, row.attempts, None, dropped="the subscription was deleted")
    assert isinstance(subscription, fhir.Subscription)
    if subscription.status == "off" or (subscription.end is not None and subscription.end <= now):
        return Notification(row.id, row.attempts, subscription, dropped="the subscription is off or ended")
    channel = subscription.channel
    headers = [tuple(p.strip() for p in (h or "").split(":", 1)) for h in channel.header or []]
    if not channel.payload:
        return Notification(row.id, row.attempts, subscription, "POST", channel.endpoint, tuple(headers))  # type: ignore[arg-type]
    version = session.get(FhirResourceVersion, (row.resource_type, row.resource_id, row.version_id))
    content = version.content.encode() if version is not None else b""
    headers.append(("Content-Type", channel.payload))
    url = f"{str(channel.endpoint).rstrip('/')}/{row.resource_type}/{row.resource_id}"
    return Notification(row.id, row.attempts, subscription, "PUT", url, tuple(headers), content)  # type: ignore[arg-type]


def _claim(engine: Engine, now: datetime) -> list[Notification]:
    with session_scope(engine) as session:
        rows = subscriptions.claim_due(session, now=now, lease=LEASE)
        return [_notification(session, row, now) for row in rows]


def _set_status(session: Session, subscription: fhir.Subscription, status: str, error: str | None) -> None:
    # Subscription.status/error show the delivery state (subscription.html#errors); unchanged content
    # makes no new version, so a long outage adds one version, not one per retry.
    current = store.read(session, "Subscription", subscription.id or "")
    assert isinstance(current, fhir.Subscription)
    if current.status in ("off",) or (current.status == status and current.error == error):
        return
    store.save(session, current.model_copy(update={"status": status, "error": error}))


def _record(engine: Engine, settings: ApiSettings, note: Notification, error: str | None) -> None:
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        if note.dropped:
            subscriptions.mark_delivered(session, delivery_id=note.delivery_id, now=now, note=f"not sent: {note.dropped}")
            metrics.NOTIFICATIONS.labels("dropped").inc()
            return
        if error is None:
            subscriptions.mark_delivered(session, delivery_id=note.delivery_id, now=now)
            metrics.NOTIFICATIONS.labels("delivered").inc()
        else:
            wait = backoff(
                note.attempts + 1,
                first=settings.subscription_retry_initial_seconds,
                maximum=settings.subscription_retry_max_seconds,
            )
            retry_at = now + wait
            subscriptions.mark_failed(session, delivery_id=note.delivery_id, error=error, retry_at=retry_at)
            metrics.NOTIFICATIONS.labels("failed").inc()
        if note.subscription is not None:
            _set_status(session, note.subscription, "active" if error is None else "error", error)


async def _send(client: httpx.AsyncClient, note: Notification) -> str | None:
    if note.dropped:
        return None
    try:
        response = await client.request(note.method, note.url, headers=list(note.headers), content=note.body)
    except httpx.HTTPError as exc:
        return f"delivery failed: {type(exc).__name__}"
    if 200 <= response.status_code < 300:
        return None
    return f"delivery failed: HTTP {response.status_code} from the endpoint"


async def _deliver(engine: Engine, client: httpx.AsyncClient, settings: ApiSettings, note: Notification) -> None:
    error = await _send(client, note)
    if error is not None:
        log.warning("subscription %s: %s (attempt %d)", note.subscription.id if note.subscription else "?", error, note.attempts + 1)
    await asyncio.to_thread(_record, engine, settings, note, error)


async def deliver_due(engine: Engine, client: httpx.AsyncClient, settings: ApiSettings) -> int:
    """Send every notification due now (one per subscription, in parallel); returns how many were tried."""
    notes = await asyncio.to_thread(_claim, engine, datetime.now(UTC))
    await asyncio.gather(*(_deliver(engine, client, settings, n) for n in notes))
    return len(notes)


async def run(engine: Engine, settings: ApiSettings, *, stop: asyncio.Event) -> None:
    """Deliver until `stop` is set, polling the queue when it is idle."""
    timeout = httpx.Timeout(settings.subscription_timeout_seconds)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        while not stop.is_set():
            if await deliver_due(engine, client, settings):
                continue
            await process.sleep(stop, settings.subscription_poll_seconds)
