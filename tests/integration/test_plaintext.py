"""Issue 18 (low): in production mode every link that carries data in clear text is one WARNING at
start-up (object store, broker, database, destinations); on a laptop nothing is said."""

import logging
from pathlib import Path

import pytest

from integration import plaintext
from integration.config import IntegrationSettings
from storage.config import StorageSettings
from storage.db import make_engine, migrate, session_scope
from storage.destinations import add_destination

PRODUCTION = {"env": "production", "s3_access_key": "site-key", "s3_secret_key": "site-secret"}


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == plaintext.log.name]


def test_the_default_links_are_named_once_each_in_production(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    integration = IntegrationSettings(kafka_bootstrap="kafka:9092")
    plaintext.warn_links(StorageSettings(), integration)
    assert _warnings(caplog) == []  # development: the local stack is plaintext by design
    plaintext.warn_links(StorageSettings(**PRODUCTION, database_url="postgresql://doctorai:pw@db/doctorai"), integration)
    warned = _warnings(caplog)
    assert len(warned) == 3 and all(w.startswith("plaintext link: ") for w in warned)
    assert any("object store" in w for w in warned) and any("Kafka kafka:9092" in w for w in warned)
    assert any("PostgreSQL db" in w for w in warned)
    encrypted = StorageSettings(**PRODUCTION, s3_secure=True, database_url="postgresql://u:pw@db/d?sslmode=verify-full")
    assert plaintext.plaintext_links(encrypted, integration) == ["Kafka kafka:9092: PLAINTEXT, no TLS"]


def test_destinations_without_tls_are_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'doctorai.db'}"
    migrate(url)
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            add_destination(session, name="pacs", kind="dicom", host="10.0.0.8", port=104)
            add_destination(session, name="ris", kind="mllp", host="10.0.0.9", port=2575, tls=True)
            add_destination(session, name="ehr", kind="fhir", host="", port=0, options={"base_url": "http://ehr/fhir"})
            add_destination(session, name="hook", kind="webhook", host="", port=0, options={"url": "https://hook/x"})
            add_destination(session, name="old", kind="mllp", host="10.0.0.7", port=2575, enabled=False)
        plaintext.warn_destinations(StorageSettings(**PRODUCTION), engine)
    finally:
        engine.dispose()
    warned = _warnings(caplog)
    assert len(warned) == 2
    assert "destination pacs (dicom 10.0.0.8:104): no TLS" in warned[0]
    assert "destination ehr (fhir http://ehr/fhir): http, not https" in warned[1]
