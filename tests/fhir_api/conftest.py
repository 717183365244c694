"""Fixtures of the fhir_api tests: the API served on a migrated SQLite database (the study fixtures are in tests/studies.py)."""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine

from fhir_api.app import create_app
from fhir_api.auth.tokens import issue_token
from fhir_api.config import ApiSettings
from storage.config import StorageSettings
from storage.db import make_engine, migrate


@dataclass
class Api:
    """The API served by uvicorn on a free loopback port, its database and its settings."""

    url: str
    engine: Engine
    settings: ApiSettings

    def token(self, scopes: list[str], *, subject: str = "ehr-interface", ttl: int | None = None) -> dict[str, str]:
        """Authorization headers with a token of these scopes."""
        value = issue_token(self.settings, subject=subject, scopes=scopes, roles=[], ttl_seconds=ttl)
        return {"Authorization": f"Bearer {value}"}

    def role(self, *roles: str, subject: str = "pacs-admin", scopes: list[str] | None = None) -> dict[str, str]:
        """Authorization headers with a token carrying these roles (admin API)."""
        value = issue_token(self.settings, subject=subject, scopes=scopes or [], roles=list(roles))
        return {"Authorization": f"Bearer {value}"}


@contextmanager
def serving(app: FastAPI, config: uvicorn.Config | None = None) -> Iterator[str]:
    """Serve an ASGI app with uvicorn (this configuration of it, if given) on a free loopback port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(config or uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def api_on(database_url: str, settings: ApiSettings | None = None) -> Iterator[Api]:
    """Serve the API on a migrated database (no object store: FHIR does not need one)."""
    settings = settings or ApiSettings(jwt_secret="fhir-server-test-secret-0123456789abcdef")
    storage = StorageSettings(database_url=database_url, s3_endpoint="127.0.0.1:1")
    engine = make_engine(database_url)
    try:
        with serving(create_app(settings, storage)) as url:
            yield Api(url=url, engine=engine, settings=settings)
    finally:
        engine.dispose()


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    """The API on a fresh SQLite database."""
    yield from api_on(db_url)


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One API for a whole module whose tests do not depend on an empty store (hypothesis runs too)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('shared-api') / 'doctorai.db'}"
    migrate(url)
    # No rate limit: these modules send thousands of requests as one client.
    yield from api_on(url, ApiSettings(jwt_secret="fhir-server-test-secret-0123456789abcdef", rate_limit_per_second=0))


@pytest.fixture
def http(api: Api) -> Iterator[httpx.Client]:
    """An HTTP client with a token allowing everything on every type."""
    with httpx.Client(base_url=api.url, headers=api.token(["system/*.cruds"])) as client:
        yield client
