"""Deliver queued subscription notifications over rest-hook channels, retrying with backoff until acknowledged.

http://hl7.org/fhir/R4/subscription.html, rest-hook: with no payload the server POSTs to the
endpoint with no body; with a payload it sends the resource as an update, PUT
[endpoint]/[type]/[id], in that MIME type. Channel headers go on every request. A 2xx answer
acknowledges the notification: it is marked delivered in the database and never sent again.
Anything else leaves it queued, retried after 5 s, 10 s, 20 s ... up to the configured
maximum, for as long as it takes; the Subscription shows status "error" and why meanwhile.

Issue 18: each subscription is served by its own task, so a slow or silent endpoint holds up
only its own queue; connections go only where the endpoint policy allows (endpoints.py), no
redirect is followed, at most a few KiB of an answer are read, and every attempt is audited as
a disclosure (DCM 110106 Export) naming the subscription, the resource and the endpoint's host.
"""

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit import log as audit_log
from audit.records import NOTIFICATION_SENT, AuditRecord, Outcome
from fhir_api import metrics
from fhir_api.config import ApiSettings
from fhir_api.subscriptions.endpoints import EndpointPolicy, EndpointRefused, transport
from integration.backoff import backoff
from storage import fhir
from storage.db import session_scope
from storage.errors import ResourceGone, ResourceNotFound
from storage.fhir import store, subscriptions
from storage.fhir.references import study_ids
from storage.instances import correlation_id_for_study
from storage.tables.fhir import FhirResourceVersion, SubscriptionDelivery

log = logging.getLogger(__name__)
# A deliverer holds a claimed row this long; after that another may retry it (e.g. after a crash).
LEASE = timedelta(minutes=2)
# Most bytes of an endpoint's answer read: only its status matters, and a body is never kept.
MAX_ANSWER_BYTES = 4096
# Most notifications in flight at once (one per subscription).
MAX_IN_FLIGHT = 100
# Correlation id of notifications about resources that belong to no study.
NOTIFICATION_CORRELATION = "subscription"


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
    subject: str = ""  # "Type/id/_history/version" of the resource announced
    correlation_id: str = NOTIFICATION_CORRELATION


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
    subject = f"{row.resource_type}/{row.resource_id}/_history/{row.version_id}"
    version = session.get(FhirResourceVersion, (row.resource_type, row.resource_id, row.version_id))
    studies = study_ids(fhir.parse(version.content)) if version is not None and version.content else []
    correlation = correlation_id_for_study(studies[0]) if studies else NOTIFICATION_CORRELATION
    sent = Notification(row.id, row.attempts, subscription, subject=subject, correlation_id=correlation)
    if not channel.payload:
        return replace(sent, url=str(channel.endpoint), headers=tuple(headers))  # type: ignore[arg-type]
    headers.append(("Content-Type", channel.payload))
    return replace(
        sent,
        method="PUT",
        url=f"{str(channel.endpoint).rstrip('/')}/{row.resource_type}/{row.resource_id}",
        headers=tuple(headers),  # type: ignore[arg-type]
        body=version.content.encode() if version is not None else b"",
    )


def _claim(engine: Engine, now: datetime, limit: int) -> list[Notification]:
    with session_scope(engine) as session:
        rows = subscriptions.claim_due(session, now=now, lease=LEASE, limit=limit)
        return [_notification(session, row, now) for row in rows]


def _set_status(session: Session, subscription: fhir.Subscription, status: str, error: str | None) -> None:
    # Subscription.status/error show the delivery state (subscription.html#errors); unchanged content
    # makes no new version, so a long outage adds one version, not one per retry.
    current = store.read(session, "Subscription", subscription.id or "")
    assert isinstance(current, fhir.Subscription)
    if current.status in ("off",) or (current.status == status and current.error == error):
        return
    store.save(session, current.model_copy(update={"status": status, "error": error}))


def _audit(session: Session, note: Notification, error: str | None, attempts: int) -> None:
    # An attempt disclosed the resource whether or not the endpoint acknowledged it.
    host = urlsplit(note.url).hostname or ""
    audit_log.append(
        session,
        AuditRecord(
            hop=NOTIFICATION_SENT,
            correlation_id=note.correlation_id,
            agent_who="doctorai-subscriptions",
            agent_address=host,
            entity_what=note.subject[:256],
            outcome=Outcome.SUCCESS if error is None else Outcome.MINOR_FAILURE,
            detail={
                "subscription": f"Subscription/{note.subscription.id if note.subscription else ''}",
                "endpoint": host,
                "attempts": str(attempts),
                "error": (error or "")[:200],
            },
        ),
    )


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
        _audit(session, note, error, note.attempts + 1)
        if note.subscription is not None:
            _set_status(session, note.subscription, "active" if error is None else "error", error)


async def _send(client: httpx.AsyncClient, note: Notification) -> str | None:
    if note.dropped:
        return None
    try:
        async with client.stream(note.method, note.url, headers=list(note.headers), content=note.body) as response:
            # Only the status matters: read a little (so a short answer leaves the connection
            # reusable), never all of it, and close.
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= MAX_ANSWER_BYTES:
                    break
    except EndpointRefused as exc:
        return f"delivery refused: {exc}"
    except httpx.HTTPError as exc:
        return f"delivery failed: {type(exc).__name__}"
    if 200 <= response.status_code < 300:
        return None
    return f"delivery failed: HTTP {response.status_code} from the endpoint"


async def _deliver(engine: Engine, client: httpx.AsyncClient, settings: ApiSettings, note: Notification) -> None:
    error = await _send(client, note)
    if error is not None:
        sid = note.subscription.id if note.subscription else "?"
        log.warning("subscription %s: %s (attempt %d)", sid, error, note.attempts + 1)
    await asyncio.to_thread(_record, engine, settings, note, error)


def client(settings: ApiSettings) -> httpx.AsyncClient:
    """The HTTP client of deliveries: checked addresses, no redirects, no proxies from the environment."""
    policy = EndpointPolicy.from_entries(settings.subscription_allowed_endpoints)
    return httpx.AsyncClient(
        transport=transport(policy),
        timeout=httpx.Timeout(settings.subscription_timeout_seconds),
        follow_redirects=False,
        trust_env=False,
    )


async def run(engine: Engine, settings: ApiSettings, *, stop: asyncio.Event) -> None:
    """Deliver until `stop` is set: a task per notification in flight, one per subscription at a time.

    The queue gives each subscription only its oldest undelivered row, and a claimed row stays
    claimed while its task runs, so a subscription's notifications go in order while others
    are sent beside it. The queue is polled when idle, and at once when a delivery finishes.
    """
    in_flight: set[asyncio.Task[None]] = set()
    finished = asyncio.Event()

    def done(task: asyncio.Task[None]) -> None:
        in_flight.discard(task)
        finished.set()

    async with client(settings) as http:
        while not stop.is_set():
            finished.clear()
            room = MAX_IN_FLIGHT - len(in_flight)
            notes = await asyncio.to_thread(_claim, engine, datetime.now(UTC), room) if room > 0 else []
            for note in notes:
                task = asyncio.create_task(_deliver(engine, http, settings, note))
                in_flight.add(task)
                task.add_done_callback(done)
            if notes:
                continue
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(finished.wait())]
            await asyncio.wait(waits, timeout=settings.subscription_poll_seconds, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
        # Let the notifications in flight finish (each is bounded by the request timeout); a
        # row whose task is cut short stays claimed until its lease ends, then is sent again.
        if in_flight:
            await asyncio.wait(in_flight, timeout=settings.subscription_timeout_seconds)
        left = list(in_flight)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
