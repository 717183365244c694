"""Fixtures: the real local stack (rclone S3, Tansu) on free ports, and databases.

The S3 server and the broker start once per session; each engine test gets its own var
directory (SQLite file), topic prefix and processes, so tests never see each other's data.
"""

import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from sqlalchemy import Engine

from doctorai.stack import (
    SPINE_MODEL,
    StackConfig,
    free_ports,
    prepare_database,
    start_broker,
    start_engine,
    start_object_store,
)
from doctorai.supervisor import Supervisor
from storage.db import make_engine, migrate
from tests.orthanc import DicomWebServer, Modality, Orthanc, OrthancFactory, start_orthanc
# The stored-study fixtures, for every folder's tests.
from tests.studies import db_url, engine, indexed, make_job, rg1  # noqa: F401

PG_URL = os.environ.get("DOCTORAI_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
_databases_used: set[str] = set()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist, hand this worker's databases to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["databases_used"] = sorted(_databases_used)


def pytest_testnodedown(node: Any, error: object) -> None:
    """Under pytest-xdist, collect what each worker used."""
    _databases_used.update(getattr(node, "workeroutput", {}).get("databases_used", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which databases the storage tests ran on."""
    used = ", ".join(sorted(_databases_used)) or "none"
    terminalreporter.write_line(f"databases used by the storage tests: {used}")


def _postgres_reachable() -> bool:
    try:
        with psycopg.connect(PG_URL, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, dropped afterwards."""
    if not _postgres_reachable():
        pytest.skip(f"PostgreSQL not reachable at {PG_URL} (set DOCTORAI_TEST_DATABASE_URL)")
    name = f"doctorai_test_{uuid.uuid4().hex[:12]}"
    base = PG_URL.rsplit("/", 1)[0]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: SQLite in tmp_path, and PostgreSQL when reachable."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'doctorai.db'}"
        migrate(url)
        _databases_used.add("sqlite")
        yield url
        return
    pg = request.getfixturevalue("postgres_database")
    url = "postgresql+psycopg://" + pg.removeprefix("postgresql://")
    migrate(url)
    _databases_used.add("postgresql")
    from storage.tables.base import Base

    pg = make_engine(url)
    with pg.connect() as conn:
        # Rows the migrations seed (the default routing rules): a clean database has them.
        seeded = {t: [dict(r._mapping) for r in conn.execute(t.select())] for t in Base.metadata.sorted_tables}
    yield url
    # Empty every table so the next test starts clean (the database lives for the session).
    with pg.begin() as conn:
        # The owner may lift the audit table's append-only trigger; the engine's role may not.
        conn.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER USER")
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
        conn.exec_driver_sql("ALTER TABLE audit_events ENABLE TRIGGER USER")
        for table, rows in seeded.items():
            if rows:
                conn.execute(table.insert(), rows)
    pg.dispose()


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    """An engine on the migrated test database."""
    migrated = make_engine(database_url)
    yield migrated
    migrated.dispose()


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackConfig]:
    """rclone S3 and Tansu, started as `doctorai up` starts them, for the whole session."""
    var_dir = tmp_path_factory.mktemp("stack")
    config = StackConfig(var_dir=var_dir, ports=free_ports())
    supervisor = Supervisor(var_dir / "logs")
    try:
        start_object_store(config, supervisor)
        start_broker(config, supervisor)
        yield config
    finally:
        supervisor.stop_all()


def process_ended(pid: int, timeout: float = 10.0) -> bool:
    """Whether process `pid` is gone within `timeout` seconds (a zombie no one reaped yet counts as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


class EngineRun:
    """The engine processes of one test on the shared services, with their own data."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.supervisor = Supervisor(config.var_dir / "logs")

    def start(self, *, models: tuple[str, ...] | None = None) -> None:
        """Start every engine process, with the chest model's inference worker or these workers."""
        config = self.config if models is None else replace(self.config, models=models)
        start_engine(config, self.supervisor)

    def kill_all(self) -> None:
        """SIGKILL every engine process, as a power cut would; the processes they started end too."""
        descendants = self._descendants()
        for child in list(self.supervisor.children):
            self.supervisor.kill(child.name)
        self._assert_ended(descendants)

    def stop(self) -> None:
        """Stop every engine process cleanly (together: the shared services stay up), and what they started."""
        descendants = self._descendants()
        self.supervisor.stop_together()
        self._assert_ended(descendants)

    def _descendants(self) -> list[psutil.Process]:
        """The processes the engine's processes started (an inference worker's model runners)."""
        found: list[psutil.Process] = []
        for child in self.supervisor.children:
            try:
                found += psutil.Process(child.process.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                continue
        return found

    @staticmethod
    def _assert_ended(processes: list[psutil.Process]) -> None:
        left = [f"{p.pid} {p.name()}" for p in processes if not process_ended(p.pid)]
        assert not left, f"engine processes left these behind: {left}"

    def logs(self, tail: int | None = 4000) -> str:
        """What the engine processes logged: the last `tail` characters of each log, or all of it."""
        return "\n".join(
            f"==== {p.name}\n{p.read_text(errors='replace')[-tail if tail else 0:]}"
            for p in sorted((self.config.var_dir / "logs").glob("*.log"))
        )


def new_engine_run(services: StackConfig, var_dir: Path) -> EngineRun:
    """An engine on the session's services, with its own SQLite database (in `var_dir`) and topic prefix."""
    base = free_ports()
    ports = replace(base, s3=services.ports.s3, kafka=services.ports.kafka)
    prefix = f"t{uuid.uuid4().hex[:8]}."
    config = StackConfig(
        var_dir=var_dir,
        ports=ports,
        quiet_period_seconds=1.0,
        topic_prefix=prefix,
        models=(SPINE_MODEL,),  # the workers a test asks for, no more: `start(models=...)`
    )
    prepare_database(config)
    return EngineRun(config)


@pytest.fixture
def engine_run(services: StackConfig, tmp_path: Path) -> Iterator[EngineRun]:
    """An engine on the session's services, with its own SQLite database and topic prefix."""
    run = new_engine_run(services, tmp_path / "var")
    yield run
    run.stop()


@pytest.fixture(scope="module")
def module_engine_run(services: StackConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineRun]:
    """One engine for every test of a module (which starts it, with the workers it needs), when its tests can share data."""
    run = new_engine_run(services, tmp_path_factory.mktemp("engine") / "var")
    yield run
    run.stop()


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[OrthancFactory]:
    """Start Orthancs (real PACSs on loopback) for this test: `orthanc_factory(aet=..., modalities=...)`.

    Each gets its own storage, free HTTP and DICOM ports and AE title (ORTHANC1, ORTHANC2, ... unless
    given); all are stopped when the test ends.
    """
    started: list[Orthanc] = []

    def start(
        *,
        aet: str | None = None,
        modalities: Mapping[str, Modality] | None = None,
        dicom_port: int | None = None,
        dicomweb: Mapping[str, DicomWebServer] | None = None,
    ) -> Orthanc:
        n = len(started) + 1
        orthanc = start_orthanc(
            tmp_path / f"orthanc{n}", aet=aet or f"ORTHANC{n}", modalities=modalities, dicom_port=dicom_port, dicomweb=dicomweb
        )
        started.append(orthanc)
        return orthanc

    yield start
    for orthanc in started:  # all at once: each takes seconds to stop
        orthanc.terminate()
    for orthanc in started:
        orthanc.stop()
