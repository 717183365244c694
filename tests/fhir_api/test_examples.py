"""The official FHIR R4 examples (tests/data/fhir) round-tripped with a standard client and with transactions."""

import json
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhirclient import client as smart_client
from fhirclient.models.diagnosticreport import DiagnosticReport as ClientReport
from fhirclient.models.patient import Patient as ClientPatient
from sqlalchemy import func, select

from storage.db import session_scope
from storage.tables.fhir import FhirResource
from tests.fhir_api.conftest import Api
from tests.fhir_api.test_interactions import DATA, FHIR_JSON, example, outcome

EXAMPLES = sorted(p.name for p in DATA.glob("*.json") if not p.name.startswith("Bundle-"))


@pytest.fixture
def smart(api: Api) -> smart_client.FHIRClient:
    """fhirclient (SMART on FHIR's Python client) pointed at the server, with a bearer token."""
    fhir = smart_client.FHIRClient(settings={"app_id": "doctorai-tests", "api_base": f"{api.url}/fhir"})
    fhir.server.session.headers.update(api.token(["system/*.cruds"]))
    return fhir


def test_fhirclient_reads_capabilities_creates_reads_and_searches(smart: smart_client.FHIRClient) -> None:
    statement = smart.server.capabilityStatement
    assert statement.fhirVersion == "4.0.1"
    assert {r.type for r in statement.rest[0].resource} >= {"DiagnosticReport", "Patient", "ImagingStudy"}
    data = example("Patient-example.json")
    data.pop("id")  # fhirclient creates only resources without an id
    patient = ClientPatient(data)
    created = patient.create(smart.server)
    assert created is not None and created["resourceType"] == "Patient"
    pid = created["id"]
    read = ClientPatient.read(pid, smart.server)
    assert read.name[0].family == "Chalmers" and read.meta.versionId == "1"
    report = example("DiagnosticReport-f201.json")
    report.pop("id")
    report["subject"] = {"reference": f"Patient/{pid}"}
    ClientReport(report).create(smart.server)
    search = ClientReport.where(struct={"subject:Patient.family": "chalmers", "status": "final"})
    found = list(search.perform_resources_iter(smart.server))
    assert [r.code.coding[0].code for r in found] == ["429858000"]  # CT of head-neck (SNOMED CT)
    read.gender = "other"
    read.update(smart.server)
    assert ClientPatient.read(pid, smart.server).meta.versionId == "2"


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_round_trip(http: httpx.Client, name: str) -> None:
    original = example(name)
    kind = original["resourceType"]
    created = http.post(f"/fhir/{kind}", json=original, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    read = http.get(f"/fhir/{kind}/{rid}").json()
    # What we stored is what was sent, apart from the id and meta the server assigns.
    for key in set(original) - {"id", "meta"}:
        assert json.dumps(read[key], sort_keys=True) == json.dumps(original[key], sort_keys=True), key
    found = Bundle.model_validate_json(http.get(f"/fhir/{kind}?_id={rid}").content)
    assert found.total == 1
    read["text"] = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">changed</div>'}
    assert http.put(f"/fhir/{kind}/{rid}", json=read, headers=FHIR_JSON).status_code == 200
    history = Bundle.model_validate_json(http.get(f"/fhir/{kind}/{rid}/_history").content)
    assert [e.response.etag for e in history.entry or []] == ['W/"2"', 'W/"1"']  # type: ignore[union-attr]


def _transaction(*entries: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
            for full_url, resource in entries
        ],
    }


def test_transaction_resolves_urn_uuid_references(http: httpx.Client) -> None:
    patient, report, study = example("Patient-example.json"), example("DiagnosticReport-ultrasound.json"), example("ImagingStudy-example-xr.json")
    report["subject"] = {"reference": "urn:uuid:8f2b0a4e-0000-4000-8000-000000000001"}
    report["imagingStudy"] = [{"reference": "urn:uuid:8f2b0a4e-0000-4000-8000-000000000002"}]
    study["subject"] = {"reference": "urn:uuid:8f2b0a4e-0000-4000-8000-000000000001"}
    bundle = _transaction(
        ("urn:uuid:8f2b0a4e-0000-4000-8000-000000000003", report),
        ("urn:uuid:8f2b0a4e-0000-4000-8000-000000000001", patient),
        ("urn:uuid:8f2b0a4e-0000-4000-8000-000000000002", study),
    )
    response = http.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    answer = Bundle.model_validate_json(response.content)
    assert answer.type == "transaction-response"
    statuses = [e.response.status for e in answer.entry or []]  # type: ignore[union-attr]
    assert statuses == ["201 Created"] * 3
    locations = [e.response.location or "" for e in answer.entry or []]  # type: ignore[union-attr]
    report_id, patient_id, study_id = (loc.split("/")[1] for loc in locations)
    stored = http.get(f"/fhir/DiagnosticReport/{report_id}").json()
    assert stored["subject"]["reference"] == f"Patient/{patient_id}"
    assert stored["imagingStudy"][0]["reference"] == f"ImagingStudy/{study_id}"
    found = Bundle.model_validate_json(http.get(f"/fhir/DiagnosticReport?patient={patient_id}&_include=DiagnosticReport:imaging-study").content)
    assert {e.resource.id for e in found.entry or []} == {report_id, study_id}  # type: ignore[union-attr]


def test_transaction_is_all_or_nothing(http: httpx.Client, api: Api) -> None:
    good = example("Patient-example.json")
    bad = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": "many"}}
    response = http.post("/fhir", json=_transaction(("urn:uuid:1", good), ("urn:uuid:2", bad)), headers=FHIR_JSON)
    outcome(response, 400, "invalid")
    # The Patient is created first, then the stale If-Match fails: the Patient must be rolled back.
    stale = _transaction(("urn:uuid:1", good))
    stale["entry"].append(
        {"resource": {**good, "id": "other"}, "request": {"method": "PUT", "url": "Patient/other", "ifMatch": 'W/"5"'}}
    )
    failed = outcome(http.post("/fhir", json=stale, headers=FHIR_JSON), 412, "conflict")
    assert "entry 1" in (failed.issue[0].diagnostics or "")
    # The official example transaction asks for a version that does not exist (If-Match W/"2") and an operation.
    official = http.post("/fhir", json=example("Bundle-bundle-transaction.json"), headers=FHIR_JSON)
    assert official.status_code >= 400, official.text
    with session_scope(api.engine) as session:
        assert session.scalar(select(func.count()).select_from(FhirResource)) == 0


def test_batch_reports_each_entry(http: httpx.Client) -> None:
    created = http.post("/fhir/Patient", json=example("Patient-example.json"), headers=FHIR_JSON).json()
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{created['id']}"}},
            {"request": {"method": "GET", "url": "Patient/missing"}},
            {"request": {"method": "GET", "url": "Patient?family=chalmers"}},
            {"request": {"method": "POST", "url": "Endpoint"}, "resource": example("Endpoint-example-wadors.json")},
        ],
    }
    answer = Bundle.model_validate_json(http.post("/fhir", json=batch, headers=FHIR_JSON).content)
    assert answer.type == "batch-response"
    assert [e.response.status for e in answer.entry or []] == ["200 OK", "404", "200 OK", "201 Created"]  # type: ignore[union-attr]
    searchset = answer.entry[2].resource  # type: ignore[index]
    assert isinstance(searchset, Bundle) and searchset.total == 1
