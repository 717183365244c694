"""Database engine and transactions: the one way to reach SQL (SQLAlchemy 2.0)."""

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from storage.errors import StorageUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"
_READ_ONLY = "doctorai_read_only"
# Whether this thread holds the SQLite writer's turn (_writer_turn).
_turns = threading.local()


def make_engine(url: str, *, checkpoints: bool = True) -> Engine:
    """Create an engine; SQLite gets WAL and a busy timeout so several processes can share it.

    `checkpoints=False`: this engine's commits never copy the SQLite WAL back into the database
    (a checkpoint, with two fsyncs): whoever commits on the way to an answer leaves that to a
    background `checkpoint` call. A checkpoint inside a commit waits on the disk behind every
    other file being written (ext4 orders its journal commits), measured at 2.4 ms a C-STORE.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, open transactions (see the "begin" hook below).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            if not checkpoints:
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            # Take the write lock up front: a deferred transaction that reads and then writes
            # fails at once with SQLITE_BUSY when another process wrote in between, whereas
            # BEGIN IMMEDIATE waits for the busy timeout. SQLite is the single-machine mode.
            # A read-only scope (read_scope) reads beside the writer instead, as WAL allows.
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ_ONLY) else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


@contextmanager
def _writer_turn(engine: Engine) -> Iterator[None]:
    """On SQLite, wait for the database's one writer to finish in the kernel, not in SQLite's busy handler.

    A writer that finds SQLite's write lock taken sleeps in the busy handler (1, 2, 5, 10 ms...)
    and retries, so the lock often stands free while every waiting writer sleeps: with two
    listener processes, most of their time. An exclusive flock on a file beside the database,
    taken before BEGIN IMMEDIATE and dropped after the commit, queues writers in the kernel,
    which wakes the next one the moment the lock is free. Each turn opens the file anew: flock
    excludes other open files, so threads of one process queue as processes do.
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    nested = getattr(_turns, "held", False)  # a scope inside this thread's own: SQLite decides, as before
    if nested or not database or database == ":memory:" or engine.get_execution_options().get(_READ_ONLY):
        yield
        return
    try:
        fd = os.open(f"{database}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:  # the database's directory is gone or unwritable: the database is too
        raise StorageUnavailable(f"database unavailable: {exc!r}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _turns.held = True
        yield
    finally:
        _turns.held = False
        os.close(fd)  # releases the lock


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error; connection failures become StorageUnavailable."""
    with _writer_turn(engine):
        session = Session(engine, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except (OperationalError, InterfaceError) as exc:
            _roll_back(session)
            raise StorageUnavailable(f"database unavailable: {type(exc.orig).__name__}") from exc
        except BaseException:
            _roll_back(session)
            raise
        finally:
            session.close()


def _roll_back(session: Session) -> None:
    """Roll back; when the connection is gone (a database restart), there is nothing to roll back, and
    the error the caller is raising, not the rollback's, says what happened."""
    try:
        session.rollback()
    except (OperationalError, InterfaceError):
        pass


def checkpoint(engine: Engine) -> None:
    """Copy what the SQLite WAL holds back into the database, without waiting for anyone (PASSIVE)."""
    if engine.dialect.name != "sqlite":
        return
    try:
        with engine.connect() as conn:
            # On the driver's connection, outside any transaction: a checkpoint cannot run in one.
            conn.connection.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")  # type: ignore[union-attr]
    except (OperationalError, sqlite3.OperationalError) as exc:
        raise StorageUnavailable(f"database unavailable: {exc!r}") from exc


@lru_cache
def _read_only(engine: Engine) -> Engine:
    return engine.execution_options(**{_READ_ONLY: True})


@contextmanager
def read_scope(engine: Engine) -> Iterator[Session]:
    """A transaction that only reads: on SQLite it does not wait for, or hold, the write lock."""
    with session_scope(_read_only(engine)) as session:
        yield session


def migrate(url: str) -> None:
    """Bring the schema to the newest Alembic revision."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "head")
