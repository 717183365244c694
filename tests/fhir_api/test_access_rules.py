"""Reads are scoped and audited wherever they hide, and a search costs a bounded amount (issue 18, Medium 7-9).

History pages and batch includes are audited; `_count` is checked everywhere; If-None-Exist
returns a match only to a reader and records it; chains need read scope on their target; an
upsert that creates needs `c`; includes, OR values and parameters are bounded; and on SQLite a
search in progress does not hold the writer's lock.
"""

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from fhir_api.fhir import search
from fhir_api.fhir.routes import read as read_routes
from storage import fhir
from storage.db import session_scope
from storage.fhir import store
from storage.tables.audit import AuditEvent
from tests.fhir_api.conftest import Api

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _client(api: Api, scopes: list[str], subject: str) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={**api.token(scopes, subject=subject), **FHIR_JSON}, timeout=30)


@pytest.fixture(scope="module")
def writer(shared_api: Api) -> Iterator[httpx.Client]:
    with _client(shared_api, ["system/*.cruds"], "writer") as client:
        yield client


def _records(api: Api, who: str, subtype: str) -> list[AuditEvent]:
    with session_scope(api.engine) as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.agent_who == who, AuditEvent.subtype == subtype)))


def _patient(writer: httpx.Client, **extra: Any) -> str:
    created = writer.post("/fhir/Patient", json={"resourceType": "Patient", **extra})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


@pytest.mark.parametrize("count", ["-2", "-1", "ten", "1.5"])
def test_history_count_is_checked(writer: httpx.Client, count: str) -> None:
    pid = _patient(writer)
    for path in (f"/fhir/Patient/{pid}/_history", "/fhir/Patient/_history"):
        assert writer.get(path, params={"_count": count}).status_code == 400, (path, count)


def test_history_pages_are_capped_paged_and_audited(shared_api: Api, writer: httpx.Client) -> None:
    pid = _patient(writer, gender="male")
    for gender in ("female", "other"):
        assert writer.put(f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "gender": gender}).status_code == 200
    subject = f"historian-{uuid.uuid4().hex[:6]}"
    with _client(shared_api, ["system/Patient.rs"], subject) as historian:
        assert "entry" not in historian.get(f"/fhir/Patient/{pid}/_history", params={"_count": "0"}).json()
        first = historian.get(f"/fhir/Patient/{pid}/_history", params={"_count": "2"}).json()
        assert len(first["entry"]) == 2
        following = next(link["url"] for link in first["link"] if link["relation"] == "next")
        assert len(historian.get(following).json()["entry"]) == 1
    records = _records(shared_api, subject, "resource-read")
    assert {r.entity_what for r in records} == {f"Patient/{pid}/_history"}
    shown = {v for r in records for v in r.detail.get("versions", "").split(",") if v}
    assert shown == {f"Patient/{pid}/_history/{n}" for n in (1, 2, 3)}
    assert all(r.detail.get("patient") == f"Patient/{pid}" for r in records if r.detail.get("versions"))


def test_batch_searches_audit_what_they_include(shared_api: Api, writer: httpx.Client) -> None:
    pid = _patient(writer)
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": f"Patient/{pid}"}}
    oid = writer.post("/fhir/Observation", json=observation).json()["id"]
    subject = f"batcher-{uuid.uuid4().hex[:6]}"
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": f"Observation?_id={oid}&_include=Observation:patient"}}]}
    with _client(shared_api, ["system/Observation.rs", "system/Patient.r"], subject) as client:
        answer = client.post("/fhir", json=batch).json()
    assert {e["resource"]["id"] for e in answer["entry"][0]["resource"]["entry"]} == {oid, pid}
    disclosed = {ref for r in _records(shared_api, subject, "resource-searched") for ref in r.detail.get("resources", "").split(",")}
    assert {f"Observation/{oid}", f"Patient/{pid}"} <= disclosed


def test_if_none_exist_returns_a_match_only_to_a_reader_and_records_it(shared_api: Api, writer: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    pid = _patient(writer, identifier=[{"system": "urn:mrn", "value": mrn}])
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": mrn}]}
    conditional = {"If-None-Exist": f"identifier=urn:mrn|{mrn}"}
    with _client(shared_api, ["system/Patient.c"], "creator-only") as creator:
        assert creator.post("/fhir/Patient", json=body, headers=conditional).status_code == 403
    subject = f"reader-{uuid.uuid4().hex[:6]}"
    with _client(shared_api, ["system/Patient.cr"], subject) as reader:
        found = reader.post("/fhir/Patient", json=body, headers=conditional)
    assert found.status_code == 200 and found.json()["id"] == pid
    assert [r.entity_what for r in _records(shared_api, subject, "resource-read")] == [f"Patient/{pid}"]


def test_chained_parameters_need_read_scope_on_their_target(shared_api: Api) -> None:
    query = {"subject:Patient.name": "peter"}
    with _client(shared_api, ["system/DiagnosticReport.rs"], "chainer") as client:
        assert client.get("/fhir/DiagnosticReport", params=query).status_code == 403
        conditional = {"If-None-Exist": "subject:Patient.name=peter"}
        report = {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"}}
        assert client.put("/fhir/DiagnosticReport", params=query, json=report).status_code == 403
        assert client.post("/fhir/DiagnosticReport", json=report, headers=conditional).status_code == 403
    with _client(shared_api, ["system/DiagnosticReport.rs", "system/Patient.r"], "chainer") as client:
        assert client.get("/fhir/DiagnosticReport", params=query).status_code == 200


def test_an_update_that_creates_needs_the_create_scope(shared_api: Api) -> None:
    pid = f"upsert-{uuid.uuid4().hex[:8]}"
    body = {"resourceType": "Patient", "id": pid}
    with _client(shared_api, ["system/Patient.u"], "updater") as updater:
        assert updater.put(f"/fhir/Patient/{pid}", json=body).status_code == 403
        transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": body, "request": {"method": "PUT", "url": f"Patient/{pid}"}}]}
        assert updater.post("/fhir", json=transaction).status_code == 403
    with _client(shared_api, ["system/Patient.cu"], "upserter") as upserter:
        assert upserter.put(f"/fhir/Patient/{pid}", json=body).status_code == 201
    with _client(shared_api, ["system/Patient.u"], "updater") as updater:
        assert updater.put(f"/fhir/Patient/{pid}", json={**body, "gender": "female"}).status_code == 200


def test_includes_values_and_parameters_are_bounded(shared_api: Api, writer: httpx.Client) -> None:
    pid = _patient(writer)
    observations = [
        fhir.Observation.model_validate(
            {"resourceType": "Observation", "id": f"{pid[:8]}-{i}", "status": "final", "code": {"text": "x"}, "subject": {"reference": f"Patient/{pid}"}}
        )
        for i in range(search.MAX_INCLUDED + 1)
    ]
    with session_scope(shared_api.engine) as session:
        store.save_many(session, observations)
    fan_out = writer.get("/fhir/Patient", params={"_id": pid, "_revinclude": "Observation:patient"})
    assert fan_out.status_code == 400 and "_revinclude" in fan_out.text
    assert writer.get("/fhir/Observation", params={"patient": pid, "_include": "Observation:patient", "_count": "100"}).status_code == 200
    assert writer.get("/fhir/Patient", params={"gender": ",".join(["male"] * 101)}).status_code == 400
    assert writer.get("/fhir/Patient", params=[("gender", "male")] * 51).status_code == 400
    assert writer.get("/fhir/Patient", params={"name:contains": "a" * 600}).status_code == 400
    assert writer.get("/fhir/Patient", params={"gender": ",".join(["male"] * 100)}).status_code == 200


def test_a_search_in_progress_does_not_hold_the_writer_lock(shared_api: Api, writer: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    _patient(writer)
    inside, release = threading.Event(), threading.Event()
    real_run = search.run

    def slow_run(*args: Any, **kwargs: Any) -> search.SearchResult:
        result = real_run(*args, **kwargs)
        inside.set()
        assert release.wait(30), "the test never released the search"  # its transaction stays open meanwhile
        return result

    monkeypatch.setattr(read_routes.search, "run", slow_run)
    searching = threading.Thread(target=lambda: writer.get("/fhir/Patient"), daemon=True)
    searching.start()
    try:
        assert inside.wait(10), "the search did not start"
        committed = threading.Event()

        def write() -> None:
            with session_scope(shared_api.engine) as session:
                store.save(session, fhir.Patient(id=f"during-{uuid.uuid4().hex[:8]}"))
            committed.set()

        threading.Thread(target=write, daemon=True).start()
        assert committed.wait(10), "a write waited for a search to finish"
    finally:
        release.set()
        searching.join(timeout=10)
