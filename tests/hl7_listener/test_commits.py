"""Group commit of HL7 v2 messages: several messages in one transaction, each answered as if alone,
on SQLite and PostgreSQL, with real rclone S3 (many connections at once over MLLP: test_mllp)."""

import contextvars
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from audit.verify import verify
from hl7_listener import commits, intake
from hl7_listener.config import MllpSettings
from hl7_listener.intake import Answer, Received, receive
from storage.fhir.references import patient_resource_id
from doctorai.stack import StackConfig
from storage.db import make_engine, session_scope
from storage.errors import StorageUnavailable
from storage.objects import ObjectStore, make_object_store
from storage.tables.fhir import FhirResource
from storage.tables.hl7 import Hl7Message
from storage.tables.pipeline import OutboxEvent
from tests.mllp_peers import sample

SETTINGS = MllpSettings(mllp_port=0, mllp_metrics_port=0)


@pytest.fixture
def db_url(database_url: str) -> str:
    """Both databases (the `engine` fixture's): their savepoints and unique violations differ."""
    return database_url


@pytest.fixture
def objects(services: StackConfig) -> ObjectStore:
    return make_object_store(services.storage_settings())


def _received(objects: ObjectStore, *names: str) -> list[Received]:
    return [
        contextvars.copy_context().run(receive, objects, SETTINGS, sample(name), source_address="10.0.0.7") for name in names
    ]


def commit(engine: Engine, settings: MllpSettings, batch: list[Received]) -> list[Answer | Exception]:
    """One batch in one transaction, as the listener's GroupCommit writes what waits together."""
    with session_scope(engine) as session:
        return commits.write(session, batch, settings=settings)


def _count(engine: Engine, table: type) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(table)) or 0  # type: ignore[arg-type]


def test_each_message_of_a_batch_is_answered_as_if_alone(engine: Engine, objects: ObjectStore) -> None:
    batch = _received(
        objects, "adt_a04_v23.hl7", "orm_o01_nw_v23.hl7", "adt_a04_v23.hl7", "bad_no_patient_id.hl7", "bad_no_msh.hl7"
    )
    outcomes = commit(engine, SETTINGS, batch)
    assert all(isinstance(o, Answer) for o in outcomes), outcomes
    answers = [o for o in outcomes if isinstance(o, Answer)]
    assert [a.code for a in answers] == ["AA", "AA", "AA", "AE", "AR"]
    # The re-send in the same transaction finds the first one: answered again, not processed twice.
    assert answers[2].duplicate and answers[2].message_id == answers[0].message_id
    assert _count(engine, Hl7Message) == 4 and _count(engine, OutboxEvent) == 2
    with session_scope(engine) as session:
        assert verify(session).intact


def test_a_message_that_fails_undoes_only_itself(
    engine: Engine, objects: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = _received(objects, "adt_a04_v23.hl7", "adt_a08_v24.hl7", "orm_o01_nw_v23.hl7")
    real = intake.record

    def fails_after_writing(session: object, settings: MllpSettings, message: Received) -> Answer:
        answer = real(session, settings, message)  # type: ignore[arg-type]
        if message.message_id == batch[1].message_id:
            raise RuntimeError("injected fault after the message's rows were written")
        return answer

    monkeypatch.setattr(commits, "record", fails_after_writing)
    first, failed, third = commit(engine, SETTINGS, batch)
    assert isinstance(first, Answer) and isinstance(third, Answer) and first.code == third.code == "AA"
    assert isinstance(failed, RuntimeError)
    with session_scope(engine) as session:
        kept = set(session.scalars(select(Hl7Message.id)))
        assert kept == {batch[0].message_id, batch[2].message_id}
        # The failed message's audit record went with it; the chain has no gap.
        assert verify(session).intact and verify(session).records == 2
        # The A08's new demographics for PAT0002 were undone with it: the A04's version stays.
        patient = session.get(FhirResource, ("Patient", patient_resource_id("PAT0002")))
        assert patient is not None
        assert patient.version_id == 1 and '"Doe"' in patient.content


def test_a_message_accepted_meanwhile_by_another_transaction_is_a_duplicate(
    engine: Engine, objects: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    (first,) = _received(objects, "orm_o01_nw_v23.hl7")
    (again,) = _received(objects, "orm_o01_nw_v23.hl7")
    (answer,) = commit(engine, SETTINGS, [first])
    # Another listener process commits between our duplicate check and our insert: the check
    # misses it once, and the unique dedupe key stops the insert.
    real = intake.accepted_message
    first_look = iter([True])

    def missed_once(session: object, *, key: str) -> object:
        return None if next(first_look, False) else real(session, key=key)  # type: ignore[arg-type]

    monkeypatch.setattr(intake, "accepted_message", missed_once)
    (late,) = commit(engine, SETTINGS, [again])
    assert isinstance(answer, Answer) and isinstance(late, Answer)
    assert late.duplicate and late.code == "AA" and late.message_id == answer.message_id
    assert _count(engine, Hl7Message) == 1 and _count(engine, OutboxEvent) == 1


def test_a_database_that_cannot_be_reached_fails_the_whole_batch(objects: ObjectStore, tmp_path: Path) -> None:
    batch = _received(objects, "adt_a04_v23.hl7", "orm_o01_nw_v23.hl7")
    unreachable = make_engine(f"sqlite:///{tmp_path / 'no such directory' / 'doctorai.db'}")
    with pytest.raises(StorageUnavailable):  # the listener answers every message of the batch AE
        commit(unreachable, SETTINGS, batch)
    unreachable.dispose()
