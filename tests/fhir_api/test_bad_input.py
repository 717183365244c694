"""Bad input earns a 4xx with an OperationOutcome (FHIR) or problem details (admin), never a 500;
and an unexpected error still answers with JSON and the security headers, keeping the connection.

The inputs are the ones issue 18's fuzzing found answered with a plain-text 500.
"""

import logging
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome

from fhir_api.fhir.routes import write
from tests.fhir_api.conftest import Api
from tests.raw_http import connect, read_answer, send

FHIR_JSON = {"Content-Type": "application/fhir+json"}
HUGE = str(2**64)


@pytest.fixture(scope="module")
def client(shared_api: Api) -> Any:
    with httpx.Client(base_url=shared_api.url, headers=shared_api.token(["system/*.cruds"]), timeout=30) as c:
        yield c


def refused(response: httpx.Response, status: int | None = 400) -> OperationOutcome:
    """Assert a FHIR refusal: this status (None: any 4xx), an OperationOutcome, the security headers."""
    if status is None:
        assert 400 <= response.status_code < 500, response.text
    else:
        assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert response.headers["x-content-type-options"] == "nosniff"
    return OperationOutcome.model_validate_json(response.content)


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceType":"Patient","extension":' + b"[" * 990 + b"]" * 990 + b"}",
        b"[" * 100_000,
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        b'{"resourceType":"Patient","extension":[' + b'{"url":"u","extension":[' * 150 + b"]}" * 150 + b"]}",
    ],
    ids=["array-990", "array-100k", "object-5000", "extension-150"],
)
@pytest.mark.parametrize("path", ["/fhir/Patient", "/fhir"])
def test_deeply_nested_json_is_refused(client: httpx.Client, path: str, body: bytes) -> None:
    refused(client.post(path, content=body, headers=FHIR_JSON))


@pytest.mark.parametrize("kind", ["Banana", 5, ["Patient"], None, "", {"a": 1}])
def test_bundle_entries_of_unknown_or_malformed_types_are_refused(client: httpx.Client, kind: object) -> None:
    entry = {"resource": {"resourceType": kind}, "request": {"method": "POST", "url": "Patient"}}
    for bundle_type in ("batch", "transaction"):
        bundle = {"resourceType": "Bundle", "type": bundle_type, "entry": [entry]}
        refused(client.post("/fhir", json=bundle, headers=FHIR_JSON))
    contained = {"resourceType": "Patient", "contained": [{"resourceType": kind}]}
    refused(client.post("/fhir/Patient", json=contained, headers=FHIR_JSON))
    refused(client.post("/fhir/Patient", json={"resourceType": kind}, headers=FHIR_JSON), 400)


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Endpoint", "status": "active", "connectionType": {"code": "x"}, "payloadType": [{"text": "x"}], "address": 5},
        {"resourceType": "Observation", "status": None, "code": {"text": "x"}},
        {"resourceType": "Observation", "status": "final", "code": None},
        {"resourceType": "Subscription", "status": "active", "reason": "r", "criteria": "Patient?", "channel": None},
        {"resourceType": "Patient", "link": [{"other": None, "type": "seealso"}]},
        {"resourceType": "Patient", "name": [None]},
    ],
)
def test_malformed_and_null_elements_are_refused(client: httpx.Client, body: dict[str, Any]) -> None:
    refused(client.post(f"/fhir/{body['resourceType']}", json=body, headers=FHIR_JSON), None)


def test_edge_dates_are_stored_and_searched(client: httpx.Client) -> None:
    patient = client.post("/fhir/Patient", json={"resourceType": "Patient", "birthDate": "9999-12-31"}, headers=FHIR_JSON)
    assert patient.status_code == 201, patient.text
    early = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "effectiveDateTime": "0001-01-01T00:00:00+14:00"}
    assert client.post("/fhir/Observation", json=early, headers=FHIR_JSON).status_code == 201
    late = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "effectiveDateTime": "9999-12-31T23:59:59-14:00"}
    assert client.post("/fhir/Observation", json=late, headers=FHIR_JSON).status_code == 201
    found = client.get("/fhir/Patient", params={"birthdate": "9999-12-31"})
    assert found.status_code == 200 and patient.json()["id"] in found.text
    for query in (
        "birthdate=ap9999-12-31",
        "birthdate=ap0001-01-01",
        "birthdate=gt9999-12-31T23:59:59-14:00",
        "birthdate=lt0001-01-01T00:00:00%2B14:00",
        "_lastUpdated=ap0001",
    ):
        assert client.get(f"/fhir/Patient?{query}").status_code == 200, query
    assert client.get("/fhir/Observation", params={"date": "0001"}).json()["total"] >= 1


def test_integers_beyond_64_bits_are_refused(client: httpx.Client, shared_api: Api) -> None:
    refused(client.get(f"/fhir/Patient/x/_history/{HUGE}"), 404)
    refused(client.get("/fhir/Patient/_history", params={"_before_key": f"2020-01-01T00:00:00+00:00|x|{HUGE}"}))
    assert client.get("/fhir/Patient", params={"_count": HUGE}).status_code == 200  # held to the page cap
    refused(client.get("/fhir/Patient", params={"_count": "-1"}), 400)
    admin = shared_api.role("admin")
    for path in (f"/admin/dead-letters?offset={HUGE}", f"/admin/dead-letters/{HUGE}", f"/admin/rules/{HUGE}", f"/admin/hl7/messages?offset={HUGE}"):
        answer = httpx.get(f"{shared_api.url}{path}", headers=admin)
        assert answer.status_code == 422, (path, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    peer = httpx.put(f"{shared_api.url}/admin/peers/FUZZ", headers=admin, json={"max_associations": int(HUGE)})
    assert peer.status_code == 422 and peer.headers["content-type"] == "application/problem+json", peer.text
    rule = httpx.post(f"{shared_api.url}/admin/rules", headers=admin, json={"name": "r", "priority": int(HUGE), "hold": True})
    assert rule.status_code == 422, rule.text


def test_an_unexpected_error_is_answered_in_json_and_the_connection_kept(
    shared_api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    marker = "Jane-Marker-Doe"

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(f"a bug that quotes the body: {marker}")

    monkeypatch.setattr(write.interactions, "create", broken)
    monkeypatch.setattr("fhir_api.admin.routes.peers.all_peers", broken)
    body = f'{{"resourceType":"Patient","name":[{{"family":"{marker}"}}]}}'.encode()
    auth = shared_api.token(["system/*.cruds"])
    sock = connect(shared_api.url)
    with sock, caplog.at_level(logging.ERROR):
        send(sock, "POST", "/fhir/Patient", {**auth, **FHIR_JSON}, body)
        first = read_answer(sock)
        assert first.status == 500
        assert first.headers["content-type"].startswith("application/fhir+json")
        assert first.headers["x-content-type-options"] == "nosniff"
        issue = OperationOutcome.model_validate_json(first.body).issue[0]
        assert issue.code == "exception" and marker not in (issue.diagnostics or "")
        # The same connection answers the next request: it was not dropped.
        send(sock, "GET", "/admin/peers", shared_api.role("admin"))
        second = read_answer(sock)
        assert second.status == 500 and second.headers["content-type"] == "application/problem+json"
        assert second.headers["x-frame-options"] == "DENY"
        send(sock, "GET", "/healthz")
        assert read_answer(sock).status == 200
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "RuntimeError" in logged and "broken" in logged  # the traceback is kept...
    assert marker not in logged  # ...but not what the request carried


def test_codes_outside_required_bindings_are_refused_naming_the_element(client: httpx.Client) -> None:
    banana = refused(client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "banana"}, headers=FHIR_JSON))
    assert banana.issue[0].code == "code-invalid"
    assert banana.issue[0].expression == ["Patient.gender"] and banana.issue[0].location == ["Patient.gender"]
    assert client.get("/fhir/Patient", params={"gender": "banana"}).json()["total"] == 0
    entry = {"resource": {"resourceType": "Patient", "name": [{"use": "nick"}]}, "request": {"method": "POST", "url": "Patient"}}
    bundle = refused(client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]}, headers=FHIR_JSON))
    assert bundle.issue[0].expression == ["Bundle.entry[0].resource.name[0].use"]
    put = {"resourceType": "Subscription", "id": "s1", "status": "active", "reason": "r", "criteria": "Patient?", "channel": {"type": "carrier-pigeon"}}
    assert refused(client.put("/fhir/Subscription/s1", json=put, headers=FHIR_JSON)).issue[0].expression == ["Subscription.channel.type"]
