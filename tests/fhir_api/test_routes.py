"""The HTTP API over a real SQLite store: auth, read, search, capabilities, audit, probes."""

import socket
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from sqlalchemy import Engine

from audit import log as audit_log
from audit.records import RESOURCE_READ, RESOURCE_SEARCHED
from integration.config import Hl7Identity
from results import consumer
from fhir_api.auth.tokens import issue_token
from fhir_api.config import ApiSettings
from fhir_api.app import create_app
from integration.messages import InferenceResult
from storage.config import StorageSettings
from storage.db import session_scope
from storage.instances import correlation_id_for_study

EXPORTS = consumer.Exports(identity=Hl7Identity(), fhir_base_url="/fhir")

SETTINGS = ApiSettings(jwt_secret="routes-test-secret-0123456789abcdef", public_base_url="")
READER = ["system/DiagnosticReport.rs", "system/Observation.rs", "system/ImagingStudy.rs", "system/Patient.rs"]


@pytest.fixture
def report(engine: Engine, make_job: Callable[..., InferenceResult]) -> InferenceResult:
    result = make_job()
    with session_scope(engine) as session:
        consumer.apply_result(session, result, EXPORTS)
    return result


@pytest.fixture
def client(db_url: str) -> Iterator[httpx.Client]:
    """The API served by uvicorn on a free loopback port, and an HTTP client for it."""
    # A closed port: no object store, so /readyz must say 503.
    storage = StorageSettings(database_url=db_url, s3_endpoint="127.0.0.1:1")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(SETTINGS, storage), log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _auth(
    scopes: list[str], *, subject: str = "ehr-interface", ttl: int | None = None, roles: list[str] | None = None
) -> dict[str, str]:
    token = issue_token(SETTINGS, subject=subject, scopes=scopes, roles=roles or [], ttl_seconds=ttl)
    return {"Authorization": f"Bearer {token}"}


def _outcome(response: httpx.Response, status: int, code: str) -> OperationOutcome:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome = OperationOutcome.model_validate_json(response.content)
    assert outcome.issue[0].code == code
    return outcome


def test_no_token_is_401_with_a_challenge(client: httpx.Client, report: InferenceResult) -> None:
    for url in ["/fhir/DiagnosticReport", f"/fhir/DiagnosticReport/{report.job_id}"]:
        response = client.get(url)
        _outcome(response, 401, "login")
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_bad_and_expired_tokens_are_401(client: httpx.Client, report: InferenceResult) -> None:
    url = f"/fhir/DiagnosticReport/{report.job_id}"
    expired = client.get(url, headers=_auth(READER, ttl=-60))
    _outcome(expired, 401, "login")
    assert 'error="invalid_token"' in expired.headers["www-authenticate"]
    forged = issue_token(
        ApiSettings(jwt_secret="someone-else-entirely-0123456789abcdef"), subject="x", scopes=READER, roles=[]
    )
    _outcome(client.get(url, headers={"Authorization": f"Bearer {forged}"}), 401, "login")
    _outcome(client.get(url, headers={"Authorization": "Bearer not.a.jwt"}), 401, "login")


def test_wrong_scope_is_403(client: httpx.Client, report: InferenceResult) -> None:
    headers = _auth(["system/Patient.r"])
    _outcome(client.get("/fhir/DiagnosticReport", headers=headers), 403, "forbidden")
    _outcome(client.get(f"/fhir/DiagnosticReport/{report.job_id}", headers=headers), 403, "forbidden")
    # Read-only scope does not allow search.
    _outcome(client.get("/fhir/DiagnosticReport", headers=_auth(["system/DiagnosticReport.r"])), 403, "forbidden")


def test_metadata_is_open_and_a_capability_statement(client: httpx.Client) -> None:
    response = client.get("/fhir/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    statement = CapabilityStatement.model_validate_json(response.content)
    assert statement.fhirVersion == "4.0.1"
    rest = statement.rest[0]  # type: ignore[index]
    assert rest.security is not None and rest.security.service is not None
    assert rest.security.service[0].coding[0].code == "SMART-on-FHIR"  # type: ignore[index]
    kinds = {r.type: r for r in rest.resource or []}
    # Encounter comes from HL7 v2 (issue 4): stored and readable.
    assert set(kinds) == {
        "AuditEvent", "DiagnosticReport", "Encounter", "Endpoint", "ImagingStudy", "Observation", "Patient",
        "ServiceRequest", "Subscription",
    }
    assert {i.code for i in kinds["AuditEvent"].interaction or []} == {"read", "search-type"}
    report_interactions = {i.code for i in kinds["DiagnosticReport"].interaction or []}
    assert report_interactions == {
        "read", "vread", "update", "delete", "history-instance", "history-type", "create", "search-type"
    }
    report_params = {p.name for p in kinds["DiagnosticReport"].searchParam or []}
    assert {"_id", "_lastUpdated", "identifier", "patient", "subject", "status", "category", "code", "date"} <= report_params
    assert {"issued", "based-on", "result"} <= report_params
    assert {i.code for i in rest.interaction or []} == {"transaction", "batch"}


@pytest.mark.parametrize(
    "query",
    [
        "patient=9RG1",
        "patient=Patient/9RG1",
        "subject=Patient/9RG1",
        "subject=9RG1",
        "status=preliminary",
        "status=http://hl7.org/fhir/diagnostic-report-status|preliminary",
        "status=final,preliminary",
        "patient=9RG1&status=preliminary",
    ],
)
def test_search_finds_the_report(client: httpx.Client, report: InferenceResult, query: str) -> None:
    response = client.get(f"/fhir/DiagnosticReport?{query}", headers=_auth(READER))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate_json(response.content)
    assert bundle.type == "searchset" and bundle.total == 1
    entries = bundle.entry or []
    assert [(e.resource.id, e.search.mode) for e in entries] == [(report.job_id, "match")]  # type: ignore[union-attr]
    assert entries[0].fullUrl == f"{client.base_url}/fhir/DiagnosticReport/{report.job_id}"
    assert any(link.relation == "self" for link in bundle.link or [])


def test_search_by_id_and_no_match(client: httpx.Client, report: InferenceResult) -> None:
    found = Bundle.model_validate_json(
        client.get(f"/fhir/DiagnosticReport?_id={report.job_id}", headers=_auth(READER)).content
    )
    assert found.total == 1
    for query in ["patient=someone-else", "status=final", "_id=nope"]:
        empty = Bundle.model_validate_json(client.get(f"/fhir/DiagnosticReport?{query}", headers=_auth(READER)).content)
        assert empty.total == 0 and not empty.entry


def test_include_returns_observations_study_and_patient(client: httpx.Client, report: InferenceResult) -> None:
    query = (
        "patient=9RG1&_include=DiagnosticReport:result&_include=DiagnosticReport:imaging-study"
        "&_include=DiagnosticReport:subject"
    )
    bundle = Bundle.model_validate_json(client.get(f"/fhir/DiagnosticReport?{query}", headers=_auth(READER)).content)
    modes = {(e.resource.get_resource_type(), e.resource.id): e.search.mode for e in bundle.entry or []}  # type: ignore[union-attr]
    assert modes == {
        ("DiagnosticReport", report.job_id): "match",
        ("Observation", f"{report.job_id}-0"): "include",
        ("ImagingStudy", report.study_uid): "include",
        ("Patient", "9RG1"): "include",
    }
    assert bundle.total == 1  # includes are not counted


@pytest.mark.usefixtures("report")
def test_include_leaves_out_types_the_token_cannot_read(client: httpx.Client) -> None:
    query = "_include=DiagnosticReport:result&_include=DiagnosticReport:imaging-study"
    bundle = Bundle.model_validate_json(
        client.get(f"/fhir/DiagnosticReport?{query}", headers=_auth(["system/DiagnosticReport.s"])).content
    )
    assert [e.resource.get_resource_type() for e in bundle.entry or []] == ["DiagnosticReport"]  # type: ignore[union-attr]


@pytest.mark.usefixtures("report")
def test_unknown_parameter_reported_or_refused_under_strict(client: httpx.Client) -> None:
    response = client.get("/fhir/DiagnosticReport?patient=9RG1&colour=blue", headers=_auth(READER))
    bundle = Bundle.model_validate_json(response.content)
    assert bundle.total == 1
    outcomes = [e for e in bundle.entry or [] if e.search and e.search.mode == "outcome"]
    assert len(outcomes) == 1
    outcome = outcomes[0].resource
    assert isinstance(outcome, OperationOutcome) and "colour" in (outcome.issue[0].diagnostics or "")
    self_link = next(link.url for link in bundle.link or [] if link.relation == "self")
    assert self_link is not None
    assert "colour" not in parse_qs(urlsplit(self_link).query)

    strict = client.get(
        "/fhir/DiagnosticReport?patient=9RG1&colour=blue", headers={**_auth(READER), "Prefer": "handling=strict"}
    )
    assert "colour" in (_outcome(strict, 400, "not-supported").issue[0].diagnostics or "")
    _outcome(client.get("/fhir/DiagnosticReport?_count=many", headers=_auth(READER)), 400, "not-supported")


def test_paging_with_count(client: httpx.Client, engine: Engine, make_job: Callable[..., InferenceResult]) -> None:
    # Three models, so three current reports (later revisions of one model amend one report).
    for model in ("model-a", "model-b", "model-c"):
        with session_scope(engine) as session:
            consumer.apply_result(session, make_job(model=model), EXPORTS)
    first = Bundle.model_validate_json(client.get("/fhir/DiagnosticReport?_count=2", headers=_auth(READER)).content)
    assert first.total == 3 and len(first.entry or []) == 2
    next_url = next(link.url for link in first.link or [] if link.relation == "next")
    assert next_url is not None
    second = Bundle.model_validate_json(client.get(next_url, headers=_auth(READER)).content)
    assert len(second.entry or []) == 1
    assert not [link for link in second.link or [] if link.relation == "next"]
    seen = [e.resource.id for e in [*(first.entry or []), *(second.entry or [])]]  # type: ignore[union-attr]
    assert len(set(seen)) == 3


def test_read_with_etag_and_audit(client: httpx.Client, engine: Engine, report: InferenceResult) -> None:
    response = client.get(f"/fhir/DiagnosticReport/{report.job_id}", headers=_auth(READER, subject="ehr-epic"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["last-modified"].endswith("GMT")
    for path in [f"Observation/{report.job_id}-0", f"ImagingStudy/{report.study_uid}", "Patient/9RG1"]:
        assert client.get(f"/fhir/{path}", headers=_auth(READER)).status_code == 200
    with session_scope(engine) as session:
        trail = audit_log.trail(session, correlation_id=correlation_id_for_study(report.study_uid))
    reads = [e for e in trail if e.subtype == RESOURCE_READ.subtype]
    assert [(e.entity_what, e.agent_who) for e in reads] == [
        (f"DiagnosticReport/{report.job_id}", "ehr-epic"),
        (f"Observation/{report.job_id}-0", "ehr-interface"),
        (f"ImagingStudy/{report.study_uid}", "ehr-interface"),
    ]
    assert reads[0].agent_address == "127.0.0.1"


def test_search_is_audited_per_study(client: httpx.Client, engine: Engine, report: InferenceResult) -> None:
    client.get("/fhir/DiagnosticReport?patient=9RG1", headers=_auth(READER))
    client.get("/fhir/DiagnosticReport?patient=nobody", headers=_auth(READER))
    with session_scope(engine) as session:
        study_trail = audit_log.trail(session, correlation_id=correlation_id_for_study(report.study_uid))
        empty_trail = audit_log.trail(session, correlation_id="search")
    searched = [e for e in study_trail if e.subtype == RESOURCE_SEARCHED.subtype]
    assert [(e.detail["query"], e.detail["resources"]) for e in searched] == [
        ("patient=9RG1", f"DiagnosticReport/{report.job_id}")
    ]
    assert searched[0].detail["patient"].startswith("Patient/")
    assert [e.detail["query"] for e in empty_trail] == ["patient=nobody"]


@pytest.mark.usefixtures("report")
def test_search_records_keep_identifiers_and_mask_names_and_birth_dates(client: httpx.Client, engine: Engine) -> None:
    # README: audit records hold identifiers only (issue 18: names and birth dates reached the trail and syslog).
    query = "name=Smith&birthdate=1970-01-01&identifier=urn:mrn|9RG1&general-practitioner.name=Jones&_count=5"
    assert client.get(f"/fhir/Patient?{query}", headers=_auth(READER)).status_code == 200
    with session_scope(engine) as session:
        [record] = [e for e in audit_log.trail(session, correlation_id="search") if e.entity_what == "Patient"]
    assert record.detail["query"] == (
        "name=***&birthdate=***&identifier=urn:mrn|9RG1&general-practitioner.name=***&_count=5"
    )
    assert "Smith" not in str(record.detail) and "1970" not in str(record.detail) and "Jones" not in str(record.detail)


@pytest.mark.usefixtures("report")
def test_unknown_resource_is_404(client: httpx.Client) -> None:
    _outcome(client.get("/fhir/DiagnosticReport/does-not-exist", headers=_auth(READER)), 404, "not-found")
    _outcome(client.get("/fhir/Medication/x", headers=_auth(["system/*.cruds"])), 404, "not-found")
    _outcome(client.get("/fhir/no/such/path", headers=_auth(READER)), 404, "not-found")


def test_v1_and_wildcard_scopes(client: httpx.Client, report: InferenceResult) -> None:
    for scopes in (["system/*.read"], ["system/*.cruds"], ["system/*.*"]):
        response = client.get(f"/fhir/DiagnosticReport/{report.job_id}", headers=_auth(scopes))
        assert response.status_code == 200, scopes


def test_probes_and_metrics(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["object_store"].startswith("unavailable")
    client.get("/fhir/metadata")
    # /metrics needs a token with the metrics (or admin) role.
    _outcome(client.get("/metrics"), 401, "login")
    _outcome(client.get("/metrics", headers=_auth(["system/*.cruds"])), 403, "forbidden")
    text = client.get("/metrics", headers=_auth([], subject="prometheus", roles=["metrics"])).text
    assert (
        'doctorai_fhir_requests_total{interaction="capabilities",resource_type="CapabilityStatement",status="200"}'
        in text
    )
