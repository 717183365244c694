"""SQLite in the single-machine mode: reads beside a writer, and WAL checkpoints left to a background call."""

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import insert, select, text

from storage.db import checkpoint, make_engine, migrate, read_scope, session_scope
from storage.errors import StorageUnavailable
from storage.tables.index import Study


def _url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    return url


def test_a_read_scope_reads_while_another_connection_holds_the_write_lock(tmp_path: Path) -> None:
    engine = make_engine(_url(tmp_path))
    with session_scope(engine) as writer:
        writer.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: the database's write lock is held
        started = time.monotonic()
        with read_scope(engine) as reader:
            assert reader.scalars(select(Study)).all() == []
        assert time.monotonic() - started < 5  # not the 30 s busy timeout a write transaction waits
    engine.dispose()


def test_commits_without_checkpoints_leave_them_to_checkpoint(tmp_path: Path) -> None:
    url = _url(tmp_path)
    engine = make_engine(url, checkpoints=False)
    wal = tmp_path / "db.sqlite-wal"
    now = datetime.now(UTC)
    row = {"correlation_id": "c", "study_description": "x" * 200, "first_received_at": now, "last_received_at": now}
    for i in range(40):  # far past SQLite's default of a checkpoint every 1000 WAL pages
        with session_scope(engine) as s:
            s.execute(insert(Study), [{**row, "study_uid": f"1.2.{i}.{j}"} for j in range(200)])
    database = tmp_path / "db.sqlite"
    assert wal.stat().st_size > 4_000_000  # over 1000 pages of 4 KiB: no commit checkpointed
    before = database.stat().st_size
    assert before < 1_000_000  # the rows are in the WAL only
    checkpoint(engine)
    assert database.stat().st_size > before + 2_000_000  # copied into the database
    engine.dispose()


def test_writers_queue_for_their_turn_and_a_scope_inside_a_scope_does_not_wait_for_itself(tmp_path: Path) -> None:
    engine = make_engine(_url(tmp_path))
    order: list[str] = []
    with session_scope(engine) as outer:

        def other_writer() -> None:
            with session_scope(engine) as s:
                order.append("other")
                s.execute(text("SELECT 1"))

        waiting = threading.Thread(target=other_writer)
        waiting.start()
        time.sleep(0.3)
        assert order == []  # queued behind this transaction, not polling SQLite's lock
        with session_scope(engine) as inner:  # same thread, before the outer one began: no deadlock on its turn
            inner.scalars(select(Study)).all()
        outer.execute(text("SELECT 1"))
        order.append("outer")
    waiting.join(10)
    assert order == ["outer", "other"]
    assert (tmp_path / "db.sqlite.writer-lock").exists()
    engine.dispose()


def test_a_connection_lost_mid_transaction_is_storage_unavailable(postgres_database: str) -> None:
    """Issue 18 (the fault harness's database restart): a FHIR create answered 500 with the driver's
    OperationalError when the server went away mid-transaction; it is StorageUnavailable (503, retry)."""
    engine = make_engine("postgresql+psycopg://" + postgres_database.removeprefix("postgresql://"))
    try:
        with pytest.raises(StorageUnavailable), session_scope(engine) as session:
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with psycopg.connect(postgres_database, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))  # what a restart does to it
            session.execute(text("SELECT 1"))
        with session_scope(engine) as session:  # the pool hands out a live connection again
            assert session.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
