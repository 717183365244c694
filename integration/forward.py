"""The DICOM forwarder: every enabled DICOM destination's queued forwards, sent until every instance is accepted.

The queue is the `forwards` table (storage/forwards.py). Each destination gets its own asyncio
task and its own thread for associations (pynetdicom is synchronous), so a destination that is
slow, refusing or down never holds up another, not even by filling a shared thread pool. Within
a destination forwards start in queue order; one that must retry waits for its backoff while
later ones go ahead.

An attempt sends the instances not yet accepted over one association (integration/cstore.py).
Instances answered with success or a warning are done; the others are retried with exponential
backoff, and the forward is dead after `outbound_max_attempts`. A circuit breaker per destination
counts attempts that got no association at all: after `forward_circuit_failures` in a row it
opens for `forward_circuit_cool_down_seconds`, during which nothing is attempted (and no attempt
is spent), then lets one forward through (half-open) and closes again when that one associates.
"""

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from sqlalchemy import Engine

from audit.log import append
from audit.records import DICOM_SENT, AuditRecord, Outcome
from integration import metrics
from integration.config import IntegrationSettings
from integration.cstore import Attempt, Peer, store_all
from integration.outbound import backoff, pause, supervise
from integration.tls import client_context
from storage.db import session_scope
from storage.deliveries import destinations
from storage.errors import StorageUnavailable
from storage.forwards import ForwardItem, due_forwards, finish_attempt, instance_counts, mark_instance, unsent_instances
from storage.objects import ObjectStore
from storage.tables.outbound import Destination

log = logging.getLogger(__name__)

BATCH = 10
DEFAULT_CALLING_AE = "DOCTORAI"


@dataclass(frozen=True)
class Target:
    """A DICOM destination as the forwarder needs it; a changed row is a new target (its task restarts)."""

    id: int
    name: str
    host: str
    port: int
    tls: bool
    called_ae: str
    calling_ae: str
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def peer(self, timeout: float) -> Peer:
        """The SCU's view, with a TLS context when the destination wants TLS."""
        options = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        context = client_context(options) if self.tls else None
        return Peer(self.host, self.port, self.called_ae, self.calling_ae, context, timeout)


@dataclass(frozen=True)
class Queued:
    """One due forward and the instances it still has to send."""

    id: int
    correlation_id: str
    study_uid: str
    revision: int
    rule: str
    attempts: int
    items: list[ForwardItem]
    kind: str = "study"
    job_id: str = ""


@dataclass
class Circuit:
    """A destination's circuit breaker: closed, open until `opened_at + cool_down`, then half-open."""

    threshold: int
    cool_down: float
    destination: str
    failures: int = 0
    opened_at: float | None = None

    def allows(self, now: float) -> bool:
        """Whether an attempt may go now: closed, or open long enough to try one (half-open)."""
        return self.opened_at is None or now - self.opened_at >= self.cool_down

    @property
    def half_open(self) -> bool:
        """Open but past its cool-down: one attempt decides."""
        return self.opened_at is not None

    def succeeded(self) -> None:
        """An association was made: close."""
        self.failures = 0
        self.opened_at = None
        metrics.CIRCUIT_OPEN.labels(self.destination).set(0)

    def failed(self, now: float) -> None:
        """No association: count it, and open (again) at the threshold."""
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = now
            metrics.CIRCUIT_OPEN.labels(self.destination).set(1)


def target_of(row: Destination) -> Target:
    """A "dicom" destination row as the forwarder (and the echo) needs it."""
    options = dict(row.options or {})
    return Target(
        id=row.id,
        name=row.name,
        host=row.host,
        port=row.port,
        tls=row.tls,
        called_ae=options.get("ae_title", ""),
        calling_ae=options.get("calling_ae") or DEFAULT_CALLING_AE,
        ca_file=options.get("ca_file", ""),
        cert_file=options.get("cert_file", ""),
        key_file=options.get("key_file", ""),
    )


def _targets(engine: Engine) -> list[Target]:
    with session_scope(engine) as session:
        return [target_of(d) for d in destinations(session, kind="dicom", enabled_only=True)]


def _due(engine: Engine, destination_id: int, limit: int) -> list[Queued]:
    with session_scope(engine) as session:
        out = []
        for f in due_forwards(session, destination_id=destination_id, limit=limit):
            items = [
                ForwardItem(i.sop_uid, i.object_key, i.sop_class_uid, i.transfer_syntax_uid)
                for i in unsent_instances(session, forward_id=f.id)
            ]
            out.append(
                Queued(f.id, f.correlation_id, f.study_uid, f.revision, f.rule, f.attempts, items, f.kind, f.job_id)
            )
        return out


def _record(engine: Engine, target: Target, forward: Queued, attempt: Attempt, retry_in: timedelta | None) -> str:
    """Write an attempt's outcome and its audit record in one transaction; returns the forward's status."""
    with session_scope(engine) as session:
        for result in attempt.results:
            mark_instance(
                session,
                forward_id=forward.id,
                sop_uid=result.sop_uid,
                sent=result.sent,
                dicom_status=result.status,
                error=result.error,
            )
        errors = [r.error for r in attempt.results if not r.sent]
        row = finish_attempt(session, forward_id=forward.id, error=errors[0] if errors else "", retry_in=retry_in)
        counts = instance_counts(session, forward_id=forward.id)
        outcome = {"sent": Outcome.SUCCESS, "dead": Outcome.SERIOUS_FAILURE}.get(row.status, Outcome.MINOR_FAILURE)
        # DCM 110106 Export (PS3.15 A.5.3.5): instances left for another node. A retried attempt is
        # audited too (minor failure), so the trail shows every try, not only the end.
        append(
            session,
            AuditRecord(
                hop=DICOM_SENT,
                correlation_id=forward.correlation_id,
                agent_who="doctorai-forward",
                agent_address=f"{target.called_ae}@{target.host}:{target.port}",
                entity_what=f"study/{forward.study_uid}",
                outcome=outcome,
                detail={
                    "destination": target.name,
                    "forward_id": str(forward.id),
                    "revision": str(forward.revision),
                    "rule": forward.rule,
                    "kind": forward.kind,
                    "job_id": forward.job_id,
                    "status": row.status,
                    "attempts": str(row.attempts),
                    "instances_sent": str(counts["sent"]),
                    "instances_failed": str(counts["failed"] + counts["pending"]),
                    "error": row.last_error[:200],
                },
            ),
        )
        return row.status


async def _attempt(
    engine: Engine,
    objects: ObjectStore,
    settings: IntegrationSettings,
    target: Target,
    forward: Queued,
    executor: ThreadPoolExecutor,
) -> Attempt:
    """Send a forward's unsent instances in the destination's thread and record the outcome."""
    loop = asyncio.get_running_loop()
    peer = target.peer(settings.forward_timeout_seconds)
    attempt = await loop.run_in_executor(executor, store_all, objects, peer, forward.items)
    sent = sum(r.sent for r in attempt.results)
    complete = sent == len(forward.items)
    last = forward.attempts + 1 >= settings.outbound_max_attempts
    retry_in = None if complete or last else backoff(settings, forward.attempts)
    status = await asyncio.to_thread(_record, engine, target, forward, attempt, retry_in)
    metrics.FORWARDED_INSTANCES.labels(target.name).inc(sent)
    metrics.FORWARDS.labels(target.name, "retry" if status == "pending" else status).inc()
    if status != "sent":
        failed = len(forward.items) - sent
        log.warning(
            "forward %d to %s: %d of %d instances not accepted (attempt %d, %s): %s",
            forward.id,
            target.name,
            failed,
            len(forward.items),
            forward.attempts + 1,
            status,
            attempt.association_error or next((r.error for r in attempt.results if not r.sent), ""),
        )
    return attempt


async def run_destination(
    engine: Engine, objects: ObjectStore, settings: IntegrationSettings, target: Target, stop: asyncio.Event
) -> None:
    """Forward one destination's studies until `stop`; never raises for a forward's failure."""
    circuit = Circuit(settings.forward_circuit_failures, settings.forward_circuit_cool_down_seconds, target.name)
    metrics.CIRCUIT_OPEN.labels(target.name).set(0)
    # One thread per destination: a hung association blocks only its own destination.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"forward-{target.name}")
    try:
        while not stop.is_set():
            if not circuit.allows(time.monotonic()):
                await pause(stop, settings.outbound_poll_seconds)
                continue
            try:
                due = await asyncio.to_thread(_due, engine, target.id, 1 if circuit.half_open else BATCH)
            except StorageUnavailable as exc:
                log.warning("forwarding to %s paused: %r", target.name, exc)
                due = []
            for forward in due:
                if stop.is_set():
                    break
                try:
                    attempt = await _attempt(engine, objects, settings, target, forward, executor)
                except StorageUnavailable as exc:
                    log.warning("forward %d to %s not recorded, will retry: %r", forward.id, target.name, exc)
                    break
                if attempt.association_error:
                    circuit.failed(time.monotonic())
                    break  # the destination is unreachable: the rest of the batch would fail the same way
                if attempt.associated:
                    circuit.succeeded()
            await pause(stop, settings.outbound_poll_seconds)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


async def run(engine: Engine, objects: ObjectStore, settings: IntegrationSettings, stop: asyncio.Event) -> None:
    """One task per enabled DICOM destination (integration.outbound.supervise)."""
    await supervise(
        "forwarding",
        partial(_targets, engine),
        lambda target: run_destination(engine, objects, settings, target, stop),
        settings,
        stop,
    )
