"""Every admin route against every kind of caller: no token (401), wrong role (403), right role (2xx).

The table of routes is checked against the admin application's own route list, so a route added
without a line here fails the suite. One seeded database serves the module; each change route
acts on its own object, so the order the routes run in does not matter.
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from fhir_api.auth import clients
from fhir_api.auth.users import create_user
from fhir_api.admin.app import create_admin_app
from fhir_api.config import ApiSettings
from integration.messages import InferenceRequest
from storage.db import make_engine, migrate, session_scope
from storage.dead_letters import Letter, save_letter
from storage.deliveries import queue_delivery
from storage.destinations import add_destination
from storage.forwards import ForwardItem, queue_forward
from storage.peers import Peer, save_peer
from storage.instances import ReceivedInstance
from storage.jobs import create_job
from storage.model_packages import activate_model_package, add_model_package
from storage.outbox import add_event
from storage.tables.hl7 import Hl7Message
from tests.fhir_api.conftest import Api, api_on
from tests.studies import rg1_instance, store_study

HELD = "1.2.826.0.1.3680043.8.498.70001"
READY = "1.2.826.0.1.3680043.8.498.70002"

# (method, route) -> (path, JSON body, the admin's status). Read routes answer the operator too.
ROUTES: dict[tuple[str, str], tuple[str, Any, int]] = {
    ("GET", "/peers"): ("/peers", None, 200),
    ("GET", "/peers/{ae_title}"): ("/peers/CT1", None, 200),
    ("PUT", "/peers/{ae_title}"): ("/peers/CT2", {"quiet_period_seconds": 5}, 201),
    ("DELETE", "/peers/{ae_title}"): ("/peers/OLD", None, 204),
    ("GET", "/destinations"): ("/destinations", None, 200),
    ("GET", "/destinations/{destination_id}"): ("/destinations/1", None, 200),
    ("POST", "/destinations"): (
        "/destinations",
        {"name": "archive", "kind": "dicom", "host": "10.0.0.9", "port": 104, "options": {"ae_title": "ARCHIVE"}},
        201,
    ),
    ("PUT", "/destinations/{destination_id}"): (
        "/destinations/1",
        {"name": "pacs", "kind": "dicom", "host": "10.0.0.8", "port": 11112, "options": {"ae_title": "PACS"}},
        200,
    ),
    ("POST", "/destinations/{destination_id}/enable"): ("/destinations/1/enable", None, 200),
    ("POST", "/destinations/{destination_id}/disable"): ("/destinations/1/disable", None, 200),
    ("DELETE", "/destinations/{destination_id}"): ("/destinations/2", None, 204),
    ("POST", "/destinations/{destination_id}/echo"): ("/destinations/3/echo", None, 200),
    ("GET", "/rules"): ("/rules", None, 200),
    ("GET", "/rules/{rule_id}"): ("/rules/1", None, 200),
    ("POST", "/rules"): ("/rules", {"name": "brain-mr", "match": {"modalities": ["MR"]}, "hold": True}, 201),
    ("PUT", "/rules/{rule_id}"): ("/rules/1", {"name": "hold-cr", "match": {"modalities": ["CR"]}, "hold": True}, 200),
    ("DELETE", "/rules/{rule_id}"): ("/rules/2", None, 204),
    ("POST", "/rules/dry-run"): ("/rules/dry-run", {"study_uid": READY, "rule": {"name": "d", "hold": True}}, 200),
    ("POST", "/rules/{rule_id}/dry-run"): ("/rules/1/dry-run", {"study_uid": READY}, 200),
    ("GET", "/forwards"): ("/forwards", None, 200),
    ("POST", "/forwards/{forward_id}/retry"): ("/forwards/1/retry", None, 200),
    ("POST", "/deliveries/{delivery_id}/retry"): ("/deliveries/1/retry", None, 200),
    ("GET", "/models"): ("/models", None, 200),
    ("GET", "/models/{name}"): ("/models/chest", None, 200),
    # The upload takes a raw archive; a JSON body passes the role check and is refused as such.
    ("POST", "/models"): ("/models", {}, 415),
    ("POST", "/models/{name}/{version}/activate"): ("/models/chest/1.0/activate", None, 200),
    ("POST", "/models/{name}/{version}/deactivate"): ("/models/chest/1.0/deactivate", None, 200),
    ("POST", "/models/{name}/{version}/retire"): ("/models/chest/2.0/retire", None, 200),
    # The fixture's chest model is not a legacy format: the opt-in is refused as needless (409).
    ("POST", "/models/{name}/{version}/allow-legacy-format"): ("/models/chest/1.0/allow-legacy-format", None, 409),
    ("GET", "/clients"): ("/clients", None, 200),
    ("GET", "/clients/{client_id}"): ("/clients/ehr", None, 200),
    ("POST", "/clients"): ("/clients", {"client_id": "ris", "scopes": ["system/*.rs"]}, 201),
    ("POST", "/clients/{client_id}/disable"): ("/clients/ehr/disable", None, 200),
    ("DELETE", "/clients/{client_id}"): ("/clients/gone", None, 204),
    ("GET", "/studies"): ("/studies", None, 200),
    ("GET", "/studies/{study_uid}"): (f"/studies/{HELD}", None, 200),
    ("GET", "/studies/{study_uid}/timeline"): (f"/studies/{HELD}/timeline", None, 200),
    ("POST", "/studies/{study_uid}/release"): (f"/studies/{HELD}/release", None, 200),
    ("POST", "/studies/{study_uid}/reprocess"): (f"/studies/{READY}/reprocess", None, 200),
    ("GET", "/jobs"): ("/jobs", None, 200),
    ("POST", "/jobs/{job_id}/retry"): ("/jobs/job-1/retry", None, 200),
    ("GET", "/deliveries"): ("/deliveries", None, 200),
    ("GET", "/dead-letters"): ("/dead-letters", None, 200),
    ("GET", "/dead-letters/{letter_id}"): ("/dead-letters/1", None, 200),
    ("POST", "/dead-letters/replay"): ("/dead-letters/replay", {"ids": [1]}, 200),
    ("POST", "/dead-letters/{letter_id}/discard"): ("/dead-letters/2/discard", {"reason": "duplicate order"}, 200),
    ("GET", "/stats"): ("/stats", None, 200),
    ("GET", "/hl7/messages"): ("/hl7/messages", None, 200),
    ("GET", "/hl7/messages/{message_id}"): ("/hl7/messages/m-1", None, 200),
    ("GET", "/openapi.json"): ("/openapi.json", None, 200),
    # Issue 16: the console's routes.
    ("GET", "/overview"): ("/overview", None, 200),
    ("GET", "/processes"): ("/processes", None, 200),
    ("GET", "/models/{name}/figures"): ("/models/chest/figures", None, 200),
    ("POST", "/models/{name}/rollback"): ("/models/brain/rollback", None, 200),
    ("POST", "/rules/validate"): ("/rules/validate", {"name": "x", "hold": True}, 200),
    ("GET", "/rules/warnings"): ("/rules/warnings", None, 200),
    ("GET", "/studies/{study_uid}/reports"): (f"/studies/{READY}/reports", None, 200),
    ("POST", "/studies/{study_uid}/forward"): (f"/studies/{READY}/forward", {"destination_id": 4}, 201),
    ("GET", "/users"): ("/users", None, 200),
    ("POST", "/users"): ("/users", {"name": "nurse", "role": "operator", "password": "a-long-enough-password"}, 201),
    ("PUT", "/users/{name}"): ("/users/ops", {"role": "auditor"}, 200),
    ("POST", "/users/{name}/unlock"): ("/users/ops2/unlock", None, 200),
    ("POST", "/users/{name}/password"): ("/users/ops3/password", {"password": "another-long-password"}, 200),
    ("DELETE", "/users/{name}"): ("/users/gone", None, 204),
    ("GET", "/audit"): ("/audit", None, 200),
    ("GET", "/audit/verification"): ("/audit/verification", None, 200),
    ("POST", "/tokens/revoke"): ("/tokens/revoke", {"jti": "a-token-id", "reason": "lost"}, 200),
}
# The role table (fhir_api/auth/roles.py): reads are the admin's and the operator's, changes the
# admin's, except people's accounts (the admin's alone) and the audit trail (the auditor's alone).
READERS = {"users": ("admin",), "audit": ("auditor",)}


def allowed(method: str, route: str) -> tuple[str, ...]:
    """The roles that may make this request."""
    area = route.strip("/").split("/")[0]
    if method == "GET":
        return READERS.get(area, ("admin", "operator"))
    return () if area == "audit" else ("admin",)


def _seed(engine_url: str, rg1: ReceivedInstance) -> None:
    engine = make_engine(engine_url)
    try:
        store_study(engine, rg1, study_uid=HELD, status="held")
        store_study(engine, rg1, study_uid=READY, status="ready")
        with session_scope(engine) as session:
            save_peer(session, Peer(ae_title="CT1"))
            save_peer(session, Peer(ae_title="OLD"))
            add_destination(session, name="pacs", kind="dicom", host="10.0.0.8", port=104, options={"ae_title": "PACS"})
            add_destination(session, name="spare", kind="mllp", host="10.0.0.7", port=2575)
            # Echoed: nothing listens on port 1 of loopback, so the answer comes at once (ok false).
            add_destination(session, name="echo-target", kind="mllp", host="127.0.0.1", port=1)
            # Rules 1 and 2 are among the default rules the migration stores.
            forward = queue_forward(
                session,
                destination_id=1,
                study_uid=HELD,
                revision=1,
                correlation_id="c",
                rule="r",
                instances=[
                    ForwardItem(sop_uid=f"{HELD}.1.1", object_key="k", sop_class_uid="1.2", transfer_syntax_uid="1.2")
                ],
            )
            delivery = queue_delivery(
                session,
                destination_id=3,
                correlation_id="c",
                subject="DiagnosticReport/r/_history/1",
                control_id="1",
                payload="MSH|",
            )
            assert forward is not None and delivery is not None
            forward.status = delivery.status = "dead"
            session.add(
                Hl7Message(
                    id="m-1", correlation_id="m-1", received_at=datetime.now(UTC), status="accepted", ack_code="AA",
                    unmapped={"ZPI[1]-2": "42"},
                )
            )
            for version in ("1.0", "2.0"):
                add_model_package(session, name="chest", version=version, framework="onnx", manifest="{}")
                # brain 2.0 is active and 1.0 was before it: a rollback has somewhere to go.
                activate_model_package(
                    session, row=add_model_package(session, name="brain", version=version, framework="onnx", manifest="{}")
                )
            add_destination(session, name="forward-target", kind="dicom", host="10.0.0.6", port=104, options={"ae_title": "FT"})
            for name in ("ops", "ops2", "ops3", "gone"):
                create_user(session, name=name, role="operator", password="a-long-enough-password", min_length=12)
            clients.register(session, client_id="ehr", name="EHR", scopes=["system/*.rs"], secret="s3cret-value")
            clients.register(session, client_id="gone", name="Old", scopes=["system/*.rs"], secret="s3cret-value")
            # A failed job, and the request the router queued for it.
            job = create_job(session, job_id="job-1", study_uid=READY, revision=1, model="chest", model_version="1.0")
            assert job is not None
            job.status = "failed"
            request = InferenceRequest(
                correlation_id="c", job_id="job-1", study_uid=READY, revision=1, model="chest", model_version="1.0",
                inputs=[], last_received_at=datetime.now(UTC),
            )
            add_event(session, topic="inference.request.chest", key=READY, message=request)
            for n in (1, 2):
                save_letter(
                    session,
                    Letter(
                        event_id=f"e{n}",
                        source_topic="study.ready",
                        key=HELD,
                        payload="{}",
                        error="boom",
                        correlation_id="c",
                    ),
                )
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The API on one seeded SQLite database for the whole module."""
    url = f"sqlite:///{tmp_path_factory.mktemp('admin-roles') / 'doctorai.db'}"
    migrate(url)
    _seed(url, rg1_instance())
    yield from api_on(url)


def test_the_table_names_every_admin_route() -> None:
    app = create_admin_app(ApiSettings(jwt_secret="fhir-server-test-secret-0123456789abcdef"))
    routes = {(method, c.path) for c in iter_route_contexts(app.routes) for method in c.methods or ()}
    assert routes == set(ROUTES)


def _call(api: Api, method: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    return httpx.request(method, f"{api.url}/admin{path}", json=body, headers=headers)


@pytest.mark.parametrize(("method", "route"), sorted(ROUTES), ids=[f"{m} {r}" for m, r in sorted(ROUTES)])
def test_route_roles(api: Api, method: str, route: str) -> None:
    path, body, status = ROUTES[(method, route)]
    refused = _call(api, method, path, body, {})
    assert refused.status_code == 401, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["www-authenticate"].startswith("Bearer")
    callers = {
        "auditor": api.role("auditor", scopes=["system/AuditEvent.rs"], subject="officer"),
        "operator": api.role("operator", subject="night-operator"),
        "admin": api.role("admin"),
    }
    # A FHIR client: scopes grant nothing under /admin.
    answer = _call(api, method, path, body, api.token(["system/*.cruds"]))
    assert answer.status_code == 403, answer.text
    may = allowed(method, route)
    # The refused roles first: a change refused changes nothing the allowed call then makes.
    for role in sorted(callers, key=lambda r: r in may):
        answer = _call(api, method, path, body, callers[role])
        if role in may:
            assert answer.status_code == status, (role, answer.text)
        else:
            assert answer.status_code == 403, (role, answer.text)
            assert answer.json()["status"] == 403


def test_openapi_lists_every_route(api: Api) -> None:
    response = httpx.get(f"{api.url}/admin/openapi.json", headers=api.role("admin"))
    assert response.status_code == 200
    document = response.json()
    listed = {(m.upper(), path) for path, item in document["paths"].items() for m in item}
    assert listed == set(ROUTES) - {("GET", "/openapi.json")}
    assert document["servers"] == [{"url": "/admin"}]


def test_unknown_admin_path_is_a_problem(api: Api) -> None:
    response = httpx.get(f"{api.url}/admin/nothing-here", headers=api.role("admin"))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Not Found"


def test_main_openapi_does_not_hold_admin_routes(api: Api) -> None:
    document = httpx.get(f"{api.url}/openapi.json", headers=api.token(["system/*.cruds"])).json()
    assert not [p for p in document["paths"] if p.startswith("/admin")]
