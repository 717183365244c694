"""Tampering with the audit table is refused by the database, and caught by `doctorai audit verify`."""

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from audit.log import append
from audit.records import INSTANCE_STORED, AuditRecord
from audit.verify import verify
from storage.db import session_scope


def fill(db: Engine, n: int = 5) -> None:
    with session_scope(db) as s:
        for i in range(n):
            append(s, AuditRecord(hop=INSTANCE_STORED, correlation_id="c", agent_who="ae:PACS", entity_what=f"1.2.{i}"))


def tamper(db: Engine, change: Callable[[Connection], None]) -> None:
    """Tamper as the tables' owner would: lift the append-only trigger, change, put it back."""
    with db.begin() as conn:
        if db.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER USER")
            change(conn)
            conn.exec_driver_sql("ALTER TABLE audit_events ENABLE TRIGGER USER")
        else:
            conn.exec_driver_sql("DROP TRIGGER audit_events_no_update")
            conn.exec_driver_sql("DROP TRIGGER audit_events_no_delete")
            change(conn)


def first_break(db: Engine) -> int | None:
    with session_scope(db) as s:
        result = verify(s)
    return None if result.first_break is None else result.first_break.record_id


def test_intact_chain_verifies(db: Engine) -> None:
    fill(db)
    with session_scope(db) as s:
        result = verify(s)
    assert result.intact and result.records == 5


def test_the_database_refuses_update_and_delete(db: Engine) -> None:
    fill(db, 2)
    for statement in ("UPDATE audit_events SET agent_who = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(DatabaseError, match="append-only"):
            with db.begin() as conn:
                conn.execute(text(statement))
    assert first_break(db) is None


def test_a_changed_field_is_named(db: Engine) -> None:
    fill(db)
    ids = _ids(db)
    tamper(db, lambda c: c.execute(text("UPDATE audit_events SET entity_what = '9.9' WHERE id = :i"), {"i": ids[2]}))
    assert first_break(db) == ids[2]


def test_a_deleted_row_is_named(db: Engine) -> None:
    fill(db)
    ids = _ids(db)
    tamper(db, lambda c: c.execute(text("DELETE FROM audit_events WHERE id = :i"), {"i": ids[1]}))
    assert first_break(db) == ids[2]  # the record after the gap no longer links


def test_swapped_rows_are_named(db: Engine) -> None:
    fill(db)
    ids = _ids(db)
    columns = "recorded_at, correlation_id, type_code, subtype, action, outcome, agent_who, agent_address, entity_what, prev_hash, hash"

    def swap(c: Connection) -> None:
        select = f"SELECT {columns}, CAST(detail AS TEXT) FROM audit_events WHERE id = :i"
        a = c.execute(text(select), {"i": ids[1]}).one()
        b = c.execute(text(select), {"i": ids[3]}).one()
        names = [n.strip() for n in columns.split(",")] + ["detail"]
        # hash is unique: park one row's hash while the other takes it.
        c.execute(text("UPDATE audit_events SET hash = 'parked' WHERE id = :i"), {"i": ids[1]})
        for target, row in ((ids[3], a), (ids[1], b)):
            assignments = ", ".join(f"{n} = :{n}" for n in names[:-1]) + ", detail = CAST(:detail AS JSON)"
            c.execute(text(f"UPDATE audit_events SET {assignments} WHERE id = :i"), {**dict(zip(names, row)), "i": target})

    tamper(db, swap)
    assert first_break(db) == ids[1]


def test_cli_reports_the_break(db: Engine, database_url: str, tmp_path: Path) -> None:
    fill(db, 3)
    doctorai = Path(sys.executable).parent / "doctorai"
    env = {"DOCTORAI_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([str(doctorai), "audit", "verify"], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "intact: 3 records" in ok.stdout
    ids = _ids(db)
    tamper(db, lambda c: c.execute(text("UPDATE audit_events SET outcome = '0' , agent_who = 'mallory' WHERE id = :i"), {"i": ids[0]}))
    broken = subprocess.run([str(doctorai), "audit", "verify"], env=env, capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1 and f"broken at record {ids[0]}" in broken.stdout


def _ids(db: Engine) -> list[int]:
    with db.connect() as c:
        return [r[0] for r in c.execute(text("SELECT id FROM audit_events ORDER BY id"))]


APPENDER = """
import sys
from audit.log import append
from audit.records import INSTANCE_STORED, AuditRecord
from storage.db import make_engine, session_scope
engine = make_engine(sys.argv[1])
for i in range(int(sys.argv[2])):
    with session_scope(engine) as s:
        append(s, AuditRecord(hop=INSTANCE_STORED, correlation_id=sys.argv[3], agent_who="p", entity_what=str(i)))
"""


def test_concurrent_processes_do_not_fork_the_chain(db: Engine, database_url: str) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", APPENDER, database_url, "25", f"proc{n}"], cwd=Path(__file__).parents[2])
        for n in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    with session_scope(db) as s:
        result = verify(s)
    assert result.intact and result.records == 100


AUDIT_KEY = "audit-key-for-tests-Qm9vb2sgb2YgdGhlIGRlYWQ"


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """DOCTORAI_AUDIT_KEY set for the processes (here: this one) that append."""
    from audit.config import get_settings

    monkeypatch.setenv("DOCTORAI_AUDIT_KEY", AUDIT_KEY)
    get_settings.cache_clear()
    yield AUDIT_KEY
    get_settings.cache_clear()


def _rewrite_with_plain_hashes(db: Engine, target: int) -> None:
    """What someone with write access but without the key can do: change a record and recompute
    every plain SHA-256 hash after it, so the unkeyed chain verifies again."""
    from sqlalchemy import select

    from audit.log import record_hash
    from storage.tables.audit import AuditEvent

    def rewrite(c: Connection) -> None:
        c.execute(text("UPDATE audit_events SET entity_what = '9.9' WHERE id = :i"), {"i": target})
        with Session(bind=c) as session:
            prev = None
            for row in session.scalars(select(AuditEvent).order_by(AuditEvent.id)):
                if prev is not None:
                    row.prev_hash = prev
                if row.id >= target:
                    row.hash = record_hash(row)
                prev = row.hash
                session.flush()

    tamper(db, rewrite)


def test_a_rewritten_chain_fails_keyed_verification(db: Engine, keyed: str) -> None:
    fill(db)
    ids = _ids(db)
    with session_scope(db) as s:
        assert verify(s, key=keyed).intact
    _rewrite_with_plain_hashes(db, ids[2])
    with session_scope(db) as s:
        assert verify(s).intact  # the plain chain holds: this is what the key is for
        keyed_result = verify(s, key=keyed)
        wrong_key = verify(s, key="someone-elses-key-0123456789abcdefgh")
    assert keyed_result.first_break is not None and keyed_result.first_break.record_id == ids[2]
    assert "audit key" in keyed_result.first_break.reason
    assert wrong_key.first_break is not None and wrong_key.first_break.record_id == ids[0]


@pytest.mark.parametrize("from_index", [3, 0])
def test_removed_seals_fail_keyed_verification(db: Engine, keyed: str, from_index: int) -> None:
    """Seals stripped from the newest records, or from all of them, are noticed."""
    fill(db)
    ids = _ids(db)
    tamper(db, lambda c: c.execute(text("UPDATE audit_events SET seal = '' WHERE id >= :i"), {"i": ids[from_index]}))
    with session_scope(db) as s:
        result = verify(s, key=keyed)
    assert result.first_break is not None
    assert result.first_break.record_id == (ids[from_index] if from_index else ids[-1])
