"""The hash-chained audit log, on SQLite and PostgreSQL."""

from sqlalchemy import Engine

from audit.log import GENESIS, append, record_hash, trail
from audit.records import INSTANCE_STORED, STUDY_READY, AuditRecord
from storage.db import session_scope


def test_records_chain_and_trail_by_correlation_id(db: Engine) -> None:
    with session_scope(db) as s:
        append(s, AuditRecord(hop=INSTANCE_STORED, correlation_id="c1", agent_who="ae:PACS", entity_what="1.2"))
        append(s, AuditRecord(hop=STUDY_READY, correlation_id="c2", agent_who="ae:X", entity_what="9"))
        append(s, AuditRecord(hop=STUDY_READY, correlation_id="c1", agent_who="ae:DOCTORAI", entity_what="1"))
    with session_scope(db) as s:
        records = trail(s, correlation_id="c1")
        assert [r.subtype for r in records] == ["instance-stored", "study-ready"]
        everything = trail(s, correlation_id="c1") + trail(s, correlation_id="c2")
        ordered = sorted(everything, key=lambda r: r.id)
        assert ordered[0].prev_hash == GENESIS
        for before, after in zip(ordered, ordered[1:]):
            assert after.prev_hash == before.hash
        assert all(r.hash == record_hash(r) for r in ordered)


def test_a_sender_named_past_its_column_is_recorded_cut_and_the_chain_verifies(db: Engine) -> None:
    """Issue 18 (the fault harness's full MLLP fuzz run on PostgreSQL): an MSH-3 of a few hundred
    bytes went into agent_who (128 characters) and failed the transaction that refused the message."""
    who = "hl7:" + "R" * 400
    with session_scope(db) as session:
        row = append(session, AuditRecord(hop=STUDY_READY, correlation_id="c-long", agent_who=who, entity_what="x" * 300))
    with session_scope(db) as session:
        (kept,) = trail(session, correlation_id="c-long")
        assert kept.agent_who == who[:128] and len(kept.entity_what) == 256
        assert record_hash(kept) == row.hash  # the hash covers what is stored
