"""FHIR REST interactions over real HTTP: create, read, vread, update, delete, history, _search, negotiation."""

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from sqlalchemy import select

from audit.records import RESOURCE_CREATED, RESOURCE_DELETED, RESOURCE_UPDATED
from integration import topics
from integration.messages import FhirReceived
from storage.db import session_scope
from storage.tables.audit import AuditEvent
from storage.tables.pipeline import OutboxEvent
from tests.fhir_api.conftest import Api

DATA = Path(__file__).parents[1] / "data" / "fhir"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def example(name: str) -> dict[str, Any]:
    """One of the vendored official R4 examples, as JSON."""
    data: dict[str, Any] = json.loads((DATA / name).read_text())
    return data


def outcome(response: httpx.Response, status: int, code: str) -> OperationOutcome:
    """Assert an OperationOutcome answer with this status and issue code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    parsed = OperationOutcome.model_validate_json(response.content)
    assert parsed.issue[0].code == code, parsed.issue[0].diagnostics
    return parsed


def create(http: httpx.Client, data: dict[str, Any], **headers: str) -> httpx.Response:
    """POST a resource to its type."""
    return http.post(f"/fhir/{data['resourceType']}", json=data, headers={**FHIR_JSON, **headers})


def test_create_read_vread_update_delete_history(http: httpx.Client, api: Api) -> None:
    created = create(http, example("Patient-example.json"))
    assert created.status_code == 201, created.text
    body = created.json()
    pid = body["id"]
    assert pid != "example"  # the server assigns ids (http.html#create)
    assert created.headers["location"] == f"{api.url}/fhir/Patient/{pid}/_history/1"
    assert created.headers["etag"] == 'W/"1"'
    assert body["meta"]["versionId"] == "1" and body["name"][0]["family"] == "Chalmers"

    read = http.get(f"/fhir/Patient/{pid}")
    assert read.status_code == 200 and read.headers["etag"] == 'W/"1"'

    body["gender"] = "female"
    stale = http.put(f"/fhir/Patient/{pid}", json=body, headers={**FHIR_JSON, "If-Match": 'W/"7"'})
    outcome(stale, 412, "conflict")
    updated = http.put(f"/fhir/Patient/{pid}", json=body, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert updated.status_code == 200, updated.text
    assert updated.headers["etag"] == 'W/"2"' and updated.json()["gender"] == "female"

    assert http.get(f"/fhir/Patient/{pid}/_history/1").json()["gender"] == "male"
    outcome(http.get(f"/fhir/Patient/{pid}/_history/9"), 404, "not-found")

    assert http.delete(f"/fhir/Patient/{pid}").status_code == 204
    outcome(http.get(f"/fhir/Patient/{pid}"), 410, "deleted")
    history = Bundle.model_validate_json(http.get(f"/fhir/Patient/{pid}/_history").content)
    assert history.type == "history"
    methods = [(e.request.method, e.response.etag) for e in history.entry or []]  # type: ignore[union-attr]
    assert methods == [("DELETE", 'W/"3"'), ("PUT", 'W/"2"'), ("POST", 'W/"1"')]
    assert history.entry is not None and history.entry[0].resource is None

    # PUT to an id that does not exist creates it (updateCreate).
    upsert = http.put("/fhir/Patient/chosen-id", json={**body, "id": "chosen-id"}, headers=FHIR_JSON)
    assert upsert.status_code == 201 and upsert.headers["etag"] == 'W/"1"'

    with session_scope(api.engine) as session:
        events = [FhirReceived.model_validate_json(e.payload) for e in session.scalars(select(OutboxEvent))]
        audit = [a.subtype for a in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert {e.event_id for e in events} and all(e.client_id == "ehr-interface" for e in events)
    assert [(e.resource_id, e.interaction, e.version_id) for e in events] == [
        (pid, "create", 1),
        (pid, "update", 2),
        (pid, "delete", 3),
        ("chosen-id", "create", 1),
    ]
    with session_scope(api.engine) as session:
        assert {e.topic for e in session.scalars(select(OutboxEvent))} == {topics.FHIR_RECEIVED}
    assert [s for s in audit if s.startswith("resource-") and s != "resource-read"] == [
        RESOURCE_CREATED.subtype,
        RESOURCE_UPDATED.subtype,
        RESOURCE_DELETED.subtype,
        RESOURCE_CREATED.subtype,
    ]


def test_conditional_create_returns_the_existing_match(http: httpx.Client) -> None:
    data = example("Patient-example.json")
    condition = "identifier=urn:oid:1.2.36.146.595.217.0.1|12345"
    first = create(http, data, **{"If-None-Exist": condition})
    second = create(http, data, **{"If-None-Exist": condition})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert create(http, data).status_code == 201  # unconditional: a second one
    outcome(create(http, data, **{"If-None-Exist": condition}), 412, "conflict")


def test_conditional_update_and_delete(http: httpx.Client) -> None:
    data = example("Patient-example.json")
    data.pop("id")
    made = http.put("/fhir/Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|12345", json=data, headers=FHIR_JSON)
    assert made.status_code == 201, made.text
    again = http.put("/fhir/Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|12345", json=data, headers=FHIR_JSON)
    assert again.status_code == 200 and again.json()["id"] == made.json()["id"]
    assert http.delete("/fhir/Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|12345").status_code == 204
    outcome(http.get(f"/fhir/Patient/{made.json()['id']}"), 410, "deleted")


def test_invalid_bodies_are_operation_outcomes(http: httpx.Client) -> None:
    outcome(http.post("/fhir/Patient", content=b"{not json", headers=FHIR_JSON), 400, "invalid")
    outcome(http.post("/fhir/Patient", json={"resourceType": "Patient", "gender": 12}, headers=FHIR_JSON), 400, "invalid")
    outcome(create(http, {"resourceType": "Patient", "birthDate": "last tuesday"}), 400, "invalid")
    mismatch = http.post("/fhir/Observation", json={"resourceType": "Patient"}, headers=FHIR_JSON)
    outcome(mismatch, 400, "invalid")
    outcome(http.post("/fhir/Patient", content=b"<Patient/>", headers={"Content-Type": "application/fhir+xml"}), 415, "not-supported")
    outcome(http.post("/fhir/Medication", json={"resourceType": "Medication"}, headers=FHIR_JSON), 404, "not-found")
    body = example("Patient-example.json")
    outcome(http.put("/fhir/Patient/other", json=body, headers=FHIR_JSON), 400, "invalid")
    subscription = {"resourceType": "Subscription", "status": "requested", "reason": "x", "criteria": "Patient?colour=blue",
                    "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:1/hook"}}
    outcome(create(http, subscription), 422, "processing")


@pytest.mark.parametrize(
    ("query", "accept", "status"),
    [
        ("", "application/fhir+json", 200),
        ("", "application/json", 200),
        ("", "application/fhir+json; fhirVersion=4.0", 200),
        ("", "text/html,application/xhtml+xml,*/*;q=0.8", 200),
        ("?_format=json", "", 200),
        ("?_format=application/fhir%2Bjson", "", 200),
        ("", "application/fhir+xml", 406),
        ("?_format=xml", "", 406),
        ("?_format=application/fhir%2Bxml", "application/fhir+json", 406),
    ],
)
def test_format_negotiation(http: httpx.Client, query: str, accept: str, status: int) -> None:
    headers = {"Accept": accept} if accept else {}
    for path in ("/fhir/metadata", "/fhir/Patient"):
        response = http.get(f"{path}{query}", headers=headers)
        assert response.status_code == status, (path, response.text)
        assert response.headers["content-type"].startswith("application/fhir+json")
        if status == 406:
            outcome(response, 406, "not-supported")


def test_search_by_post_equals_get(http: httpx.Client) -> None:
    for name in ("Patient-example.json",):
        assert create(http, example(name)).status_code == 201
    got = Bundle.model_validate_json(http.get("/fhir/Patient?family=chalm").content)
    posted = http.post(
        "/fhir/Patient/_search", content=b"family=chalm", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert posted.status_code == 200, posted.text
    assert got.total == Bundle.model_validate_json(posted.content).total == 1
    history = Bundle.model_validate_json(http.get("/fhir/Patient/_history").content)
    assert history.type == "history" and len(history.entry or []) == 1
