"""The outbound engine with real MLLP and HTTP peers: supervision (a changed row, a crash) and every kind's circuit breaker."""

from functools import partial

from prometheus_client import REGISTRY
from sqlalchemy import Engine, select

from doctorai.stack import free_ports
from integration.outbound import http, mllp
from integration.outbound.deliveries import QUEUE
from integration.outbound.engine import Transport
from integration.outbound.target import Target
from storage.db import session_scope
from storage.deliveries import queue_delivery
from storage.destinations import add_destination, destination_by_name
from storage.tables.audit import AuditEvent
from storage.tables.outbound import Delivery, Destination
from tests.mllp_peers import receiver, segment, wait_for
from tests.senders import fast, sending

# Long enough that an open circuit never lets an attempt through while the test runs.
SETTINGS = fast(outbound_max_attempts=100, outbound_circuit_failures=2, outbound_circuit_cool_down_seconds=3600)


def _queue(engine: Engine, destination: str, control_id: str) -> None:
    payload = f"MSH|^~\\&|DOCTORAI|DOCTORAI|EHR||20240101000000||ORU^R01^ORU_R01|{control_id}|P|2.5.1\rPID|1||9RG1\r"
    with session_scope(engine) as session:
        row = destination_by_name(session, name=destination)
        assert row is not None
        queue_delivery(
            session,
            destination_id=row.id,
            correlation_id=f"c-{control_id}",
            subject=f"DiagnosticReport/{control_id}",
            control_id=control_id,
            payload=payload,
        )


def _delivery(engine: Engine, destination: str) -> tuple[str, int]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(Delivery.status, Delivery.attempts).join(Destination).where(Destination.name == destination)
        )
        ((status, attempts),) = rows
        return status, attempts


def _circuit(name: str) -> float | None:
    return REGISTRY.get_sample_value("doctorai_destination_circuit_open", {"destination": name})


def test_an_unreachable_destination_opens_its_circuit_and_its_changed_row_restarts_its_task(engine: Engine) -> None:
    with session_scope(engine) as session:
        add_destination(session, name="moved", kind="mllp", host="127.0.0.1", port=free_ports().mllp)
        hook = f"http://127.0.0.1:{free_ports().http}/events"
        add_destination(session, name="hook-down", kind="webhook", host="", port=0, options={"url": hook})
    _queue(engine, "moved", "C-MOVED")
    _queue(engine, "hook-down", "C-HOOK")
    pushes = http.transport(SETTINGS)
    transports = {"mllp": mllp.transport(SETTINGS), "webhook": pushes}

    with receiver() as steady, receiver() as new_home:
        with session_scope(engine) as session:
            add_destination(session, name="steady", kind="mllp", host="127.0.0.1", port=steady.port)

        def scenario() -> None:
            # Nothing listens: after two attempts that found nobody, each circuit opens.
            wait_for(lambda: _circuit("moved") == 1 and _circuit("hook-down") == 1, what="both circuits to open")
            assert _delivery(engine, "moved") == ("pending", SETTINGS.outbound_circuit_failures)
            # Meanwhile another destination goes on: five messages, each in a poll of its own.
            for n in range(5):
                _queue(engine, "steady", f"C-STEADY-{n}")
                wait_for(lambda: len(steady.received) == n + 1, what=f"steady message {n}")
            # An open circuit spends no attempt.
            assert _delivery(engine, "moved") == ("pending", SETTINGS.outbound_circuit_failures)
            assert _delivery(engine, "hook-down") == ("pending", SETTINGS.outbound_circuit_failures)
            # The row changes: its task restarts with the new address and a closed circuit.
            with session_scope(engine) as session:
                row = destination_by_name(session, name="moved")
                assert row is not None
                row.port = new_home.port
            wait_for(lambda: _delivery(engine, "moved")[0] == "sent", what="the delivery at its new address")

        sending(engine, SETTINGS, transports, scenario)
        assert [segment(m, "MSH")[9] for m in new_home.received] == ["C-MOVED"]
    assert _delivery(engine, "moved") == ("sent", SETTINGS.outbound_circuit_failures + 1)
    assert _circuit("moved") == 0
    with session_scope(engine) as session:
        audits = session.scalars(select(AuditEvent).where(AuditEvent.subtype == "hl7-sent").order_by(AuditEvent.id))
        assert [a.outcome for a in audits if a.detail["destination"] == "moved"] == ["4", "4", "0"]


def test_a_task_that_crashes_is_restarted(engine: Engine) -> None:
    crashes: list[str] = []

    def connect(target: Target) -> mllp.Connection:
        if not crashes:
            crashes.append(target.name)
            raise RuntimeError("a bug in the transport")
        return mllp.Connection(target, timeout=SETTINGS.outbound_ack_timeout_seconds)

    with receiver() as ehr:
        with session_scope(engine) as session:
            add_destination(session, name="ehr", kind="mllp", host="127.0.0.1", port=ehr.port)
        _queue(engine, "ehr", "C-1")
        transports = {"mllp": Transport(QUEUE, connect)}
        until = partial(wait_for, lambda: _delivery(engine, "ehr") == ("sent", 1), what="sent")
        sending(engine, SETTINGS, transports, until)
        assert crashes == ["ehr"]
        assert [segment(m, "MSH")[9] for m in ehr.received] == ["C-1"]
