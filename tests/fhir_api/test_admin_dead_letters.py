"""Dead letters: stored from the dlq topic by the integration process, then listed, inspected, replayed and
discarded through the admin API; a replay puts the original payload back on its topic through the outbox."""

import json

import httpx
from aiokafka import ConsumerRecord
from sqlalchemy import Engine, select

from integration import dead_letters
from integration.config import IntegrationSettings
from integration.messages import DeadLetter
from storage.db import session_scope
from storage.tables.audit import AuditEvent
from storage.tables.pipeline import OutboxEvent
from tests.fhir_api.conftest import Api

SETTINGS = IntegrationSettings(topic_prefix="site1.")
STUDY_UID = "1.2.826.0.1.3680043.8.498.72001"


def _record(value: bytes, offset: int) -> ConsumerRecord[bytes, bytes]:
    """A record of the dlq topic as the consumer receives it."""
    return ConsumerRecord(
        topic="site1.dlq",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=STUDY_UID.encode(),
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=len(value),
        headers=[],
    )


def _letter(payload: str, correlation_id: str, offset: int) -> ConsumerRecord[bytes, bytes]:
    """What integration.kafka._dead_letter publishes for a failed study.ready record."""
    letter = DeadLetter(
        correlation_id=correlation_id,
        source_topic="site1.study.ready",
        partition=0,
        offset=offset,
        key=STUDY_UID,
        value=payload,
        error="InvalidMessage: no instances",
    )
    return _record(letter.model_dump_json().encode(), offset)


def _store(engine: Engine) -> list[str]:
    payloads = [json.dumps({"correlation_id": f"corr-{n}", "study_uid": STUDY_UID, "n": n}) for n in (1, 2, 3)]
    for n, payload in enumerate(payloads, start=1):
        record = _letter(payload, f"corr-{n}", n)
        dead_letters.store(engine, SETTINGS, record)
        dead_letters.store(engine, SETTINGS, record)  # delivered twice, stored once
    return payloads


def test_letters_are_stored_once_with_their_topic_unprefixed(api: Api) -> None:
    _store(api.engine)
    dead_letters.store(api.engine, SETTINGS, _record(b"not json at all", 99))
    page = httpx.get(f"{api.url}/admin/dead-letters", headers=api.role("operator")).json()
    assert page["total"] == 4
    assert [(i["source_topic"], i["status"]) for i in page["items"]] == [("dlq", "open")] + [
        ("study.ready", "open")
    ] * 3
    assert page["items"][0]["error"].startswith("not a dead letter")
    by_topic = httpx.get(f"{api.url}/admin/dead-letters", params={"topic": "study.ready"}, headers=api.role("operator"))
    assert by_topic.json()["total"] == 3
    with session_scope(api.engine) as session:
        records = list(session.scalars(select(AuditEvent).where(AuditEvent.subtype == "dead-lettered")))
    assert sorted(r.correlation_id for r in records) == ["corr-1", "corr-2", "corr-3", "unknown"]


def test_replay_puts_the_payload_back_on_its_topic_and_discard_needs_a_reason(api: Api) -> None:
    payloads = _store(api.engine)
    admin = api.role("admin", subject="integration-lead")
    one = httpx.get(f"{api.url}/admin/dead-letters/1", headers=admin).json()
    assert one["payload"] == payloads[0] and one["correlation_id"] == "corr-1"
    # A payload can carry patient data: reading it is audited in the study's trail, the payload not copied.
    with session_scope(api.engine) as session:
        [read] = session.scalars(select(AuditEvent).where(AuditEvent.subtype == "admin-inspection"))
    assert (read.agent_who, read.correlation_id, read.detail["dead_letter"]) == ("integration-lead", "corr-1", "1")
    assert payloads[0] not in str(read.detail)

    replayed = httpx.post(f"{api.url}/admin/dead-letters/replay", json={"ids": [1, 2]}, headers=admin)
    assert replayed.status_code == 200, replayed.text
    assert [(r["id"], r["status"], r["resolved_by"]) for r in replayed.json()] == [
        (1, "replayed", "integration-lead"),
        (2, "replayed", "integration-lead"),
    ]
    with session_scope(api.engine) as session:
        outbox = list(session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)))
    assert [(e.topic, e.key, e.payload) for e in outbox] == [
        ("study.ready", STUDY_UID, payloads[0]),
        ("study.ready", STUDY_UID, payloads[1]),
    ]
    # All or nothing: letter 1 is replayed already, so letter 3 is not replayed either.
    again = httpx.post(f"{api.url}/admin/dead-letters/replay", json={"ids": [3, 1]}, headers=admin)
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
    assert httpx.post(f"{api.url}/admin/dead-letters/replay", json={"ids": [42]}, headers=admin).status_code == 404
    assert httpx.post(f"{api.url}/admin/dead-letters/replay", json={"ids": []}, headers=admin).status_code == 422

    assert httpx.post(f"{api.url}/admin/dead-letters/3/discard", json={}, headers=admin).status_code == 422
    assert (
        httpx.post(f"{api.url}/admin/dead-letters/3/discard", json={"reason": "  "}, headers=admin).status_code == 422
    )
    discarded = httpx.post(f"{api.url}/admin/dead-letters/3/discard", json={"reason": "order cancelled"}, headers=admin)
    assert discarded.status_code == 200 and discarded.json()["reason"] == "order cancelled"
    assert (
        httpx.post(f"{api.url}/admin/dead-letters/3/discard", json={"reason": "twice"}, headers=admin).status_code
        == 409
    )
    statuses = httpx.get(f"{api.url}/admin/dead-letters", params={"status": "open"}, headers=admin).json()
    assert statuses["total"] == 0

    with session_scope(api.engine) as session:
        records = list(
            session.scalars(select(AuditEvent).where(AuditEvent.subtype == "admin-operation").order_by(AuditEvent.id))
        )
        assert len(session.scalars(select(OutboxEvent)).all()) == 2
    assert [(r.detail["operation"], r.correlation_id) for r in records] == [
        ("replay", "corr-1"),
        ("replay", "corr-2"),
        ("discard", "corr-3"),
    ]
    assert json.loads(records[2].detail["before"])["status"] == "open"
    assert json.loads(records[2].detail["after"])["status"] == "discarded"
    assert records[2].detail["reason"] == "order cancelled" and records[2].agent_who == "integration-lead"
