"""A short run of benchmarks/console.py's data and calls: every console page's admin API calls answer
on a filled database (the timing itself is the benchmark's, not the suite's)."""

from pathlib import Path

import httpx

from benchmarks.console import PASSWORD, SETTINGS, fill, pages
from fhir_api.app import create_app
from storage.config import StorageSettings
from storage.db import make_engine, migrate
from tests.fhir_api.conftest import serving


def test_every_benchmarked_call_answers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'doctorai.db'}"
    migrate(url)
    engine = make_engine(url)
    try:
        uid = fill(engine, 40)
    finally:
        engine.dispose()
    with serving(create_app(SETTINGS, StorageSettings(database_url=url, s3_endpoint="127.0.0.1:1"))) as base:
        clients = {name: httpx.Client(base_url=base) for name in ("ada", "alma")}
        try:
            for name, client in clients.items():
                client.post("/console/session", json={"name": name, "password": PASSWORD}).raise_for_status()
            for page, calls in pages(uid).items():
                for who, path in calls:
                    answer = clients[who].get(path)
                    assert answer.status_code == 200, (page, path, answer.text)
        finally:
            for client in clients.values():
                client.close()
