"""Storage commitment reports (PS3.4 J.3.3): what one says, sending it on a new association to the
requester, and the sweep that sends every report that is due, after a restart too.

A report lists the instances the index holds (committed: their bytes are in object storage) and
the ones it does not, each with its Failure Reason: 0112H no such instance, 0119H held under
another SOP class (J.3.3.1.1). On a new association we are the association requester but the
SCP of the SOP class, so we propose that role (SCP/SCU Role Selection, PS3.7 D.3.3.4, J.3.3); the
requester is found by its AE title in `dicom_peers` (its port, and its host or the address it
asked from). A report that does not go is tried again, the wait doubling (integration.backoff),
until the request is `dicom_commitment_expiry_seconds` old.
"""

import logging
import threading
from datetime import UTC, datetime, timedelta

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]
from sqlalchemy import Engine

from audit.log import append
from audit.records import COMMITMENT_REPORTED, AuditRecord, Outcome
from dicom_listener.config import DicomSettings
from dicom_listener.peers import PeerDirectory
from integration import dimse_status
from integration.backoff import backoff
from integration.dimse_status import Category, category
from integration.outbound.dicom import Peer, close_socket, unreachable
from storage import commitments
from storage.db import session_scope
from storage.errors import StorageUnavailable

log = logging.getLogger(__name__)

# The well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.5).
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
# Event Type IDs (J.3.3.1): every instance committed; some not.
ALL_COMMITTED = 1
SOME_FAILED = 2
_REASONS = {"missing": dimse_status.NO_SUCH_OBJECT_INSTANCE, "class-conflict": dimse_status.CLASS_INSTANCE_CONFLICT}
# How often the sweep looks for due reports.
_POLL_SECONDS = 1.0


def _references(instances: tuple[tuple[str, str], ...]) -> list[Dataset]:
    items = []
    for sop_class, sop_uid in instances:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_uid
        items.append(item)
    return items


def event_information(transaction_uid: str, outcome: commitments.Outcome, ae_title: str) -> tuple[int, Dataset]:
    """The Event Type ID and Event Information of a report (PS3.4 J.3.3.1, Table J.3-2)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ds.RetrieveAETitle = ae_title
    if outcome.committed:
        ds.ReferencedSOPSequence = _references(outcome.committed)
    if not outcome.failed:
        return ALL_COMMITTED, ds
    failed = _references(tuple((c, i) for c, i, _ in outcome.failed))
    for item, (_, _, reason) in zip(failed, outcome.failed, strict=True):
        item.FailureReason = _REASONS[reason]
    ds.FailedSOPSequence = failed
    return SOME_FAILED, ds


def settle(
    engine: Engine,
    settings: DicomSettings,
    commitment: commitments.Commitment,
    outcome: commitments.Outcome,
    *,
    error: str,
    via: str,
) -> None:
    """Record how a report went: sent (audited), or tried again later, or given up (audited)."""
    now = datetime.now(UTC)
    expired = now - commitment.created_at > timedelta(seconds=settings.dicom_commitment_expiry_seconds)
    with session_scope(engine) as session:
        if not error:
            commitments.reported(session, transaction_uid=commitment.transaction_uid, now=now)
        elif expired:
            commitments.expire(session, transaction_uid=commitment.transaction_uid, error=error)
        else:
            wait = backoff(
                commitment.attempts, first=settings.dicom_commitment_retry_first_seconds, maximum=settings.dicom_commitment_retry_max_seconds
            )
            commitments.retry_at(session, transaction_uid=commitment.transaction_uid, when=now + wait, error=error)
        if error and not expired:
            return
        append(
            session,
            AuditRecord(
                hop=COMMITMENT_REPORTED,
                correlation_id=f"commitment-{commitment.transaction_uid}",
                agent_who=f"ae:{settings.dicom_ae_title}",
                entity_what=commitment.transaction_uid,
                outcome=Outcome.MINOR_FAILURE if error else Outcome.SUCCESS,
                detail={
                    "to": f"ae:{commitment.calling_ae}",
                    "via": via,
                    "committed": str(len(outcome.committed)),
                    "failed": str(len(outcome.failed)),
                    **({"error": error[:200]} if error else {}),
                },
            ),
        )


def _send(settings: DicomSettings, peers: PeerDirectory, commitment: commitments.Commitment, event: tuple[int, Dataset]) -> str:
    """Send one report on a new association; "" when the requester accepted it, else why not."""
    known = peers.peer(commitment.calling_ae)
    if known is None or not known.port:
        return f"no port known for {commitment.calling_ae} in dicom_peers"
    host = known.host or commitment.address
    # Tried first: pynetdicom leaves the socket of a refused connection to the garbage collector.
    reason = unreachable(Peer(host, known.port, commitment.calling_ae, settings.dicom_ae_title, None, settings.dicom_dimse_timeout))
    if reason:
        return reason
    ae = AE(ae_title=settings.dicom_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = settings.dicom_dimse_timeout
    ae.add_requested_context(StorageCommitmentPushModel)
    role = build_role(StorageCommitmentPushModel, scp_role=True)
    assoc = ae.associate(host, known.port, ae_title=commitment.calling_ae, ext_neg=[role])
    if not assoc.is_established:
        close_socket(assoc)
        return f"no association with {commitment.calling_ae}@{host}:{known.port}"
    try:
        status, _ = assoc.send_n_event_report(event[1], event[0], StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
    finally:
        if assoc.is_established:
            assoc.release()
        else:
            close_socket(assoc)
    if status is None or "Status" not in status:
        return "no N-EVENT-REPORT response"
    if category(int(status.Status)) not in (Category.SUCCESS, Category.WARNING):
        return f"N-EVENT-REPORT answered 0x{int(status.Status):04X}"
    return ""


def deliver_due(engine: Engine, settings: DicomSettings, peers: PeerDirectory, *, transaction_uid: str | None = None) -> int:
    """Send the reports that are due (or the one named, if due) on new associations; how many were tried."""
    now = datetime.now(UTC)
    # Held back from other senders while this one connects and waits for the response.
    lease = timedelta(seconds=4 * settings.dicom_dimse_timeout)
    with session_scope(engine) as session:
        due = commitments.claim(session, now=now, lease=lease, transaction_uid=transaction_uid)
        outcomes = [commitments.outcome(session, c.instances) for c in due]
    for commitment, outcome in zip(due, outcomes, strict=True):
        event = event_information(commitment.transaction_uid, outcome, settings.dicom_ae_title)
        try:
            error = _send(settings, peers, commitment, event)
        except (OSError, RuntimeError, ValueError) as exc:
            error = f"cannot send the report: {exc}"
        if error:
            log.warning("storage commitment report %s not delivered: %s", commitment.transaction_uid, error)
        settle(engine, settings, commitment, outcome, error=error, via="new association")
    return len(due)


def run(engine: Engine, settings: DicomSettings, peers: PeerDirectory, stop: threading.Event) -> None:
    """Send due reports until `stop` is set; a database outage only delays them."""
    while not stop.wait(_POLL_SECONDS):
        try:
            deliver_due(engine, settings, peers)
        except StorageUnavailable as exc:
            log.warning("storage commitment reports postponed: %s", exc)
