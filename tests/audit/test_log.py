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
