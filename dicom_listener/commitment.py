"""Storage Commitment Push Model SCP (PS3.4 Annex J): the N-ACTION that asks us to commit to a list of
instances, answered at once, and its report on the requesting association while that is open.

The request is recorded (storage.commitments) before the N-ACTION-RSP, so a report is never lost:
it goes on this association once it has been idle for `dicom_commitment_idle_seconds` (the
connection's loop calls `report_here`), or, when the peer releases first or does not take it, on
a new association (commitment_reports.py), at once from the ending connection's thread and
later from the sweep. Instances are committed when the index holds them: every instance we
acknowledged is in object storage before its C-STORE-RSP (dicom_listener/ingest.py).
"""

import logging
from datetime import UTC, datetime, timedelta

from pydicom.errors import InvalidDicomError

from audit.log import append
from audit.records import COMMITMENT_REQUESTED, AuditRecord
from dicom_listener import commitment_reports, dimse, exchange
from dicom_listener.association import Association
from dicom_listener.commitment_reports import WELL_KNOWN_INSTANCE
from dicom_listener.errors import PeerReleased
from dicom_listener.ingest import Answer, Receiver
from integration.errors import CannotUnderstand
from integration.instances.spool import Spool
from integration import dimse_status
from integration.dimse_status import Category, category
from storage import commitments
from storage.db import session_scope
from storage.errors import StorageUnavailable

log = logging.getLogger(__name__)

# Action Type ID 1: Request Storage Commitment (PS3.4 J.3.2.1.1).
REQUEST_COMMITMENT = 1


def request(receiver: Receiver, assoc: Association, command: dimse.Command, context_id: int, spool: Spool) -> Answer:
    """N-ACTION: record the request and owe its report; the N-ACTION-RSP's status (J.3.2.1.3)."""
    if command.action_type_id != REQUEST_COMMITMENT:
        return Answer(dimse_status.NO_SUCH_ACTION, f"action type {command.action_type_id} is not a commitment request")
    if command.sop_instance_uid != WELL_KNOWN_INSTANCE:
        return Answer(dimse_status.NO_SUCH_OBJECT_INSTANCE, "not the well-known storage commitment instance")
    try:
        ds = exchange.data_set(spool, assoc.contexts[context_id].transfer_syntax, max_bytes=receiver.settings.dicom_max_request_bytes)
        transaction_uid = str(ds.get("TransactionUID", "")).strip()
        references = [
            (str(item.ReferencedSOPClassUID).strip(), str(item.ReferencedSOPInstanceUID).strip())
            for item in ds.get("ReferencedSOPSequence") or []
        ]
    except (InvalidDicomError, CannotUnderstand, ValueError, EOFError, KeyError, TypeError, AttributeError, OSError) as exc:
        return Answer(dimse_status.INVALID_ATTRIBUTE_VALUE, f"action information unreadable: {type(exc).__name__}")
    if not transaction_uid or not references:
        return Answer(dimse_status.MISSING_ATTRIBUTE, "Transaction UID and Referenced SOP Sequence are required")
    assert assoc.policy is not None
    now = datetime.now(UTC)
    # Held for this association while it may still carry the report: it is sent once the
    # association has been idle for a while, and an association idle for longer ends.
    hold = now + timedelta(seconds=receiver.settings.dicom_commitment_idle_seconds + assoc.policy.network_timeout)
    try:
        with session_scope(receiver.engine) as session:
            commitments.record(
                session,
                transaction_uid=transaction_uid,
                calling_ae=assoc.calling_ae,
                address=assoc.address,
                instances=references,
                hold_until=hold,
                now=now,
            )
            append(
                session,
                AuditRecord(
                    hop=COMMITMENT_REQUESTED,
                    correlation_id=f"commitment-{transaction_uid}",
                    agent_who=f"ae:{assoc.calling_ae}",
                    agent_address=assoc.address,
                    entity_what=transaction_uid,
                    detail={"instances": str(len(references))},
                ),
            )
    except StorageUnavailable:
        return Answer(dimse_status.RESOURCE_LIMITATION, "database unavailable, retry later")
    assoc.reports.append((transaction_uid, context_id))
    return Answer(dimse_status.SUCCESS)


def report_here(receiver: Receiver, assoc: Association) -> None:
    """Send the reports this association owes on it, each N-EVENT-REPORT answered before the next.

    Raises PeerReleased when the peer releases instead of answering: the reports not taken go on
    a new association (`ended`).
    """
    settings = receiver.settings
    while assoc.reports:
        transaction_uid, context_id = assoc.reports[0]
        now = datetime.now(UTC)
        with session_scope(receiver.engine) as session:
            lease = timedelta(seconds=4 * settings.dicom_dimse_timeout)
            claimed = commitments.claim(session, now=now, lease=lease, transaction_uid=transaction_uid, held=True)
            outcome = commitments.outcome(session, claimed[0].instances) if claimed else None
        if not claimed or outcome is None:
            assoc.reports.pop(0)  # another sender took it (the association outlived its hold)
            continue
        event_type, information = commitment_reports.event_information(transaction_uid, outcome, settings.dicom_ae_title)
        message_id = assoc.next_message_id()
        command = dimse.n_event_report_request(message_id, assoc.contexts[context_id].abstract_syntax, WELL_KNOWN_INSTANCE, event_type)
        data = exchange.encode_data_set(information, assoc.contexts[context_id].transfer_syntax)
        exchange.request(assoc, context_id, command, data)
        try:
            answer = exchange.response_to(assoc, message_id)
        except PeerReleased:
            with session_scope(receiver.engine) as session:
                commitments.due_now(session, transaction_uid=transaction_uid, now=datetime.now(UTC))
            raise
        assoc.reports.pop(0)
        taken = category(answer.status) in (Category.SUCCESS, Category.WARNING)
        error = "" if taken else f"N-EVENT-REPORT answered 0x{answer.status:04X}"
        commitment_reports.settle(receiver.engine, settings, claimed[0], outcome, error=error, via="same association")


def ended(receiver: Receiver, assoc: Association) -> None:
    """The association ended owing reports: each is due at once, and sent now on a new association."""
    for transaction_uid, _ in assoc.reports:
        try:
            with session_scope(receiver.engine) as session:
                commitments.due_now(session, transaction_uid=transaction_uid, now=datetime.now(UTC))
            commitment_reports.deliver_due(receiver.engine, receiver.settings, receiver.peers, transaction_uid=transaction_uid)
        except StorageUnavailable as exc:
            log.warning("storage commitment report %s left to the sweep: %s", transaction_uid, exc)
    assoc.reports.clear()
