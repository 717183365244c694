"""MLLP destinations against real MLLP receivers: ACK rules, retries, dead letters, one destination never blocks another."""

from functools import partial

import pytest
from sqlalchemy import Engine, select

from integration.errors import FramingError
from integration.outbound import mllp
from doctorai.stack import free_ports
from storage.db import session_scope
from storage.deliveries import queue_delivery
from storage.destinations import add_destination
from storage.tables.audit import AuditEvent
from storage.tables.outbound import Delivery, Destination
from tests.mllp_peers import receiver, segment, wait_for
from tests.senders import FAST as SETTINGS
from tests.senders import sending


def _queue(engine: Engine, name: str, port: int, control_id: str) -> None:
    payload = f"MSH|^~\\&|DOCTORAI|DOCTORAI|{name}||20240101000000||ORU^R01^ORU_R01|{control_id}|P|2.5.1\rPID|1||9RG1\r"
    with session_scope(engine) as session:
        target = add_destination(session, name=name, kind="mllp", host="127.0.0.1", port=port)
        queue_delivery(
            session, destination_id=target.id, correlation_id="c-1", subject=f"DiagnosticReport/{name}",
            control_id=control_id, payload=payload,
        )


def _statuses(engine: Engine) -> dict[str, tuple[str, int, str]]:
    with session_scope(engine) as session:
        rows = session.execute(select(Destination.name, Delivery.status, Delivery.attempts, Delivery.ack_code).join(Delivery))
        return {name: (status, attempts, code) for name, status, attempts, code in rows}


def test_each_destination_is_retried_or_dead_lettered_on_its_own(engine: Engine) -> None:
    answers = {"flaky": ["AE", "AA"]}

    def flaky(_: bytes) -> str:
        return answers["flaky"].pop(0)

    with receiver() as good, receiver(flaky) as retried, receiver(lambda _: "AR") as rejecting:
        _queue(engine, "down", free_ports().mllp, "C-DOWN")  # nothing listens there
        _queue(engine, "good", good.port, "C-GOOD")
        _queue(engine, "flaky", retried.port, "C-FLAKY")
        _queue(engine, "rejecting", rejecting.port, "C-AR")

        def finished() -> bool:
            return all(s in ("sent", "dead") for s, _, _ in _statuses(engine).values())

        until = partial(wait_for, finished, timeout=60, what="every delivery finished")
        sending(engine, SETTINGS, {"mllp": mllp.transport(SETTINGS)}, until)
        assert segment(good.received[0], "MSH")[9] == "C-GOOD"
        assert len(retried.received) == 2  # the same message again after AE
        assert segment(retried.received[1], "MSH")[9] == "C-FLAKY"
    statuses = _statuses(engine)
    assert statuses["good"] == ("sent", 1, "AA")
    assert statuses["flaky"] == ("sent", 2, "AA")
    assert statuses["rejecting"] == ("dead", 1, "AR")  # AR: sending it again cannot help
    assert statuses["down"][:2] == ("dead", SETTINGS.outbound_max_attempts)
    with session_scope(engine) as session:
        audited: dict[str, list[str]] = {}
        for a in session.scalars(select(AuditEvent).where(AuditEvent.subtype == "hl7-sent").order_by(AuditEvent.id)):
            audited.setdefault(a.detail["destination"], []).append(a.outcome)
        last_error = session.scalar(select(Delivery.last_error).join(Destination).where(Destination.name == "down"))
        refusal = session.scalar(select(Delivery.last_error).join(Destination).where(Destination.name == "rejecting"))
    # The ACK code in our words, never the peer's ERR or MSA-3 text (a read channel, issue 18).
    assert refusal == "AR: the receiver rejected the message"
    # Every attempt is audited: a retried failure is a minor failure (4), giving up a serious one (8).
    assert audited == {
        "good": ["0"],
        "flaky": ["4", "0"],
        "rejecting": ["8"],
        "down": ["4"] * (SETTINGS.outbound_max_attempts - 1) + ["8"],
    }
    assert last_error and "cannot connect" in last_error


def test_ack_code_reads_msa_and_checks_the_control_id() -> None:
    ack = b"MSH|^~\\&|R|F|S|F|20240101||ACK^R01^ACK|9|P|2.5.1\rMSA|AE|C1\rERR||OBX^1^5|207^Application internal error^HL70357|E\r"
    code, detail = mllp.ack_code(ack, control_id="C1")
    assert code == "AE" and "207" in detail
    with pytest.raises(FramingError):
        mllp.ack_code(ack, control_id="C2")
    with pytest.raises(FramingError):
        mllp.ack_code(b"garbage", control_id="C1")
