"""Enhanced-mode application acknowledgements (HL7 v2 2.9.3): MSH-16 asks for one after processing.

The commit ACK (CA/CE/CR) goes back on the sender's connection at once (hl7_listener.server). The
application ACK (AA/AE) says how processing went and travels as a message of its own to the
sender's return address: the enabled MLLP destination whose `application_acks_for` option names
the sender as "MSH-3^MSH-4" (or MSH-3 alone). It is queued in the transaction that stores the
message, so it is sent exactly when the message is kept, by the outbound sender with its retries.
"""

import logging
import uuid

from sqlalchemy.orm import Session

from hl7_listener.config import MllpSettings
from integration.errors import Hl7Error
from integration.hl7v2 import Header, ack
from storage.deliveries import queue_delivery
from storage.destinations import destinations
from storage.tables.outbound import Destination

log = logging.getLogger(__name__)


def wanted(header: Header, code: str) -> bool:
    """Whether MSH-16 asks for an application ACK with this outcome (HL7 table 0155)."""
    condition = header.application_ack_type
    return condition == "AL" or (condition == "ER" and code != "AA") or (condition == "SU" and code == "AA")


def return_destination(session: Session, header: Header) -> Destination | None:
    """The MLLP destination configured as this sender's return address, if any."""
    names = {
        f"{header.sending_application}^{header.sending_facility}".upper(),
        header.sending_application.upper(),
    }
    for row in destinations(session, kind="mllp", enabled_only=True):
        if str((row.options or {}).get("application_acks_for", "")).strip().upper() in names:
            return row
    return None


def queue_application_ack(
    session: Session,
    settings: MllpSettings,
    header: Header,
    *,
    message_id: str,
    code: str,
    error: Hl7Error | None,
) -> bool:
    """Queue the application ACK MSH-16 asks for; False when none is asked for or none can be sent."""
    if not wanted(header, code):
        return False
    target = return_destination(session, header)
    if target is None:
        log.warning(
            "%s^%s asked for application ACKs (MSH-16 %s) but no MLLP destination has application_acks_for set",
            header.sending_application,
            header.sending_facility,
            header.application_ack_type,
        )
        return False
    control_id = "DAA" + uuid.uuid4().hex[:17]
    # The ACK asks for a commit ACK itself (MSH-15 AL, MSH-16 NE), so the receiver's CA tells the
    # sender it arrived; an application ACK is never application-acknowledged (2.9.3.2).
    payload = ack(
        header,
        code,
        control_id=control_id,
        application=settings.hl7_application,
        facility=settings.hl7_facility,
        error=error,
        enhanced=True,
    ).decode()
    row = queue_delivery(
        session,
        destination_id=target.id,
        correlation_id=message_id,
        subject=f"hl7:{message_id}:application-ack",
        control_id=control_id,
        payload=payload,
    )
    return row is not None
