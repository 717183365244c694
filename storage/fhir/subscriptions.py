"""The subscription delivery queue: rows written with the change they announce, claimed by a deliverer.

A row is owed to one Subscription for one resource version. Rows of one subscription are sent
in the order they were queued: only the oldest undelivered row of each subscription is due,
so a failing endpoint holds its queue, and a recovered one receives everything in order.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from storage.fhir import criteria
from storage import fhir
from storage.errors import InvalidSearch, StorageError
from storage.tables.fhir import FhirResource, FhirSearchIndex, SubscriptionDelivery

# Subscription.status values under which changes are matched (http://hl7.org/fhir/R4/valueset-subscription-status.html):
# "error" still matches, because the server keeps trying to deliver.
MATCHING_STATUSES = ("active", "error")


@dataclass(frozen=True)
class Watch:
    """A subscription's criteria, parsed: the resource type and the criteria it must meet."""

    resource_type: str
    criteria: list[criteria.Criterion]


def watch(subscription: fhir.Subscription) -> Watch:
    """Parse Subscription.criteria ("DiagnosticReport?status=final"); InvalidSearch when unsupported."""
    text = subscription.criteria or ""
    resource_type, _, query = text.partition("?")
    resource_type = urlsplit(resource_type).path.rsplit("/", 1)[-1]
    if resource_type not in fhir.RESOURCE_CLASSES:
        raise InvalidSearch(f"subscription criteria on an unsupported type: {resource_type!r}")
    return Watch(resource_type=resource_type, criteria=criteria.parse_all(resource_type, query))


# session.info key of the subscriptions read in this transaction (bulk loads save thousands of resources).
_CACHE = "doctorai.active_subscriptions"


def forget(session: Session) -> None:
    """Drop the transaction's cached subscriptions (a Subscription was just written)."""
    session.info.pop(_CACHE, None)


def _subscriptions(session: Session) -> list[fhir.Subscription]:
    cached: list[fhir.Subscription] | None = session.info.get(_CACHE)
    if cached is not None:
        return cached
    active = select(FhirSearchIndex.resource_id).where(
        FhirSearchIndex.resource_type == "Subscription",
        FhirSearchIndex.param == "status",
        FhirSearchIndex.value.in_(MATCHING_STATUSES),
    )
    rows = session.scalars(
        select(FhirResource.content).where(
            FhirResource.resource_type == "Subscription", FhirResource.resource_id.in_(active)
        )
    )
    found = [s for s in (fhir.parse(r) for r in rows) if isinstance(s, fhir.Subscription)]
    session.info[_CACHE] = found
    return found


def enqueue_matches(session: Session, *, resource_type: str, resource_id: str, version_id: int) -> int:
    """Queue a notification for every matching subscription of this new version; returns how many.

    The criteria are applied to the new version, so a change that stops matching sends nothing
    (http://hl7.org/fhir/R4/subscription.html).
    """
    if resource_type == "Subscription":
        forget(session)
        return 0
    now = datetime.now(UTC)
    queued = 0
    for subscription in _subscriptions(session):
        if subscription.end is not None and subscription.end <= now:
            continue
        try:
            wanted = watch(subscription)
        except StorageError:
            continue  # refused when the subscription was stored; a later registry change cannot break writes
        if wanted.resource_type != resource_type:
            continue
        stmt = select(FhirResource.resource_id).where(
            FhirResource.resource_type == resource_type, FhirResource.resource_id == resource_id
        )
        for criterion in wanted.criteria:
            stmt = stmt.where(criteria.condition(resource_type, criterion))
        if session.scalar(stmt) is None:
            continue
        session.add(
            SubscriptionDelivery(
                subscription_id=subscription.id or "",
                resource_type=resource_type,
                resource_id=resource_id,
                version_id=version_id,
                created_at=now,
                attempts=0,
                next_attempt_at=now,
                last_error="",
            )
        )
        queued += 1
    return queued


def claim_due(session: Session, *, now: datetime, lease: timedelta, limit: int = 100) -> list[SubscriptionDelivery]:
    """Claim the oldest undelivered row of each subscription, if it is due and not held by another deliverer."""
    d = SubscriptionDelivery
    heads = (
        select(func.min(d.id)).where(d.delivered_at.is_(None)).group_by(d.subscription_id).scalar_subquery()
    )
    stmt = (
        select(d)
        .where(d.id.in_(heads), d.next_attempt_at <= now, (d.claimed_until.is_(None)) | (d.claimed_until < now))
        .order_by(d.id)
        .limit(limit)
    )
    claimed = []
    for row in session.scalars(stmt):
        # A conditional update: of two deliverers racing for a row, exactly one sees rowcount 1.
        result = session.execute(
            update(d)
            .where(d.id == row.id, d.delivered_at.is_(None), (d.claimed_until.is_(None)) | (d.claimed_until < now))
            .values(claimed_until=now + lease)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) == 1:
            claimed.append(row)
    return claimed


def mark_delivered(session: Session, *, delivery_id: int, now: datetime, note: str = "") -> None:
    """The endpoint acknowledged the notification (or it is no longer owed); it is never sent again."""
    session.execute(
        update(SubscriptionDelivery)
        .where(SubscriptionDelivery.id == delivery_id)
        .values(delivered_at=now, claimed_until=None, last_error=note, attempts=SubscriptionDelivery.attempts + 1)
    )


def mark_failed(session: Session, *, delivery_id: int, error: str, retry_at: datetime) -> None:
    """An attempt failed: count it, keep the error and try again at `retry_at`."""
    session.execute(
        update(SubscriptionDelivery)
        .where(SubscriptionDelivery.id == delivery_id)
        .values(
            attempts=SubscriptionDelivery.attempts + 1,
            last_error=error[:2000],
            next_attempt_at=retry_at,
            claimed_until=None,
        )
    )


def pending(session: Session, *, subscription_id: str | None = None) -> int:
    """How many notifications are still owed (to one subscription, or in all)."""
    stmt = select(func.count()).select_from(SubscriptionDelivery).where(SubscriptionDelivery.delivered_at.is_(None))
    if subscription_id is not None:
        stmt = stmt.where(SubscriptionDelivery.subscription_id == subscription_id)
    return session.scalar(stmt) or 0
