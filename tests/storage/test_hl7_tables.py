"""Orders, deliveries and HL7 message rows on SQLite and PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from storage.db import session_scope
from storage.deliveries import mark_failed, queue_delivery
from storage.destinations import DestinationExists, add_destination
from storage.errors import MessageNotFound
from storage.hl7_messages import accepted_message, dedupe_key, unmapped_report
from storage.orders import order_for_accession, save_order
from storage.queues import due
from storage.tables.hl7 import Hl7Message
from storage.tables.outbound import Delivery


def _order(session: object, **changes: str) -> None:
    values = dict(
        service_request_id="sr-1", placer_number="PL1^RIS", filler_number="FL1^PACS", accession_number="A1",
        patient_id="P1", status="active", order_control="NW", message_id="m1",
    )
    values.update(changes)
    save_order(session, **values)  # type: ignore[arg-type]


def test_orders_keep_identifiers_and_match_by_accession_and_patient(db: Engine) -> None:
    with session_scope(db) as session:
        _order(session)
        _order(session, placer_number="", filler_number="", status="revoked", order_control="CA", message_id="m2")
    with session_scope(db) as session:
        order = order_for_accession(session, accession_number="A1", patient_id="P1")
        assert order is not None and order.status == "revoked" and order.placer_number == "PL1^RIS"
        assert order_for_accession(session, accession_number="A1", patient_id="P2") is None
        assert order_for_accession(session, accession_number="A1") is not None


def test_a_delivery_is_queued_once_and_backs_off(db: Engine) -> None:
    with session_scope(db) as session:
        target = add_destination(session, name="EHR", kind="mllp", host="h", port=1)
        with pytest.raises(DestinationExists):
            add_destination(session, name="EHR", kind="mllp", host="h", port=2)
        first = queue_delivery(session, destination_id=target.id, correlation_id="c", subject="DR/1", control_id="C1", payload="x")
        assert first is not None
        assert queue_delivery(session, destination_id=target.id, correlation_id="c", subject="DR/1", control_id="C2", payload="x") is None
        mark_failed(session, delivery_id=first.id, error="AE", ack_code="AE", retry_in=timedelta(hours=1))
    with session_scope(db) as session:
        assert due(session, Delivery, destination_id=target.id, limit=10) == []
        later = datetime.now(UTC) + timedelta(hours=2)
        assert [d.attempts for d in due(session, Delivery, destination_id=target.id, limit=10, now=later)] == [1]


def test_one_accepted_message_per_sender_and_control_id(db: Engine) -> None:
    key = dedupe_key("EHR", "HOSP", "C1")

    def row(message_id: str) -> Hl7Message:
        return Hl7Message(
            id=message_id, correlation_id=message_id, control_id="C1", received_at=datetime.now(UTC), status="accepted",
            ack_code="AA", unmapped={"PID[1]-19": "x"}, dedupe_key=key, sender_application="EHR", sender_facility="HOSP",
            source_address="", message_type="ADT", trigger_event="A04", version="2.5", object_key="k", size=1, error="",
        )

    with session_scope(db) as session:
        session.add(row("m1"))
    with pytest.raises(IntegrityError):
        with session_scope(db) as session:
            session.add(row("m2"))
    with session_scope(db) as session:
        found = accepted_message(session, key=key)
        assert found is not None and found.id == "m1"
        assert unmapped_report(session, message_id="m1") == {"PID[1]-19": "x"}
        with pytest.raises(MessageNotFound):
            unmapped_report(session, message_id="nope")
