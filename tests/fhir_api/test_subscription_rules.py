"""Subscriptions cannot widen what a client may read or reach (issue 18, High 3).

Scope on the criteria's type, endpoints in private ranges refused when stored and when sent,
owners and masked channel headers, one slow endpoint holding up no other, answers read in part
only, and every delivery audited as a disclosure.
"""

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from fhir_api.config import ApiSettings
from storage.db import session_scope
from storage.fhir import subscriptions
from storage.tables.audit import AuditEvent
from storage.tables.fhir import SubscriptionDelivery
from tests.fhir_api.conftest import Api, api_on, serving
from tests.fhir_api.test_interactions import FHIR_JSON, example
from tests.fhir_api.test_subscriptions import FAST_RETRIES, LOOPBACK, delivering, wait_for

SECRET = "fhir-server-test-secret-0123456789abcdef"
# A request time-out far longer than any wait below: a stuck endpoint stays stuck throughout.
DELIVERER = FAST_RETRIES.model_copy(update={"subscription_timeout_seconds": 30})


@dataclass
class Hooks:
    """Receivers: /fast answers at once, /stuck holds every request until released, /endless streams for ever."""

    fast: list[str] = field(default_factory=list)
    stuck: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    endless_sent: int = 0


@pytest.fixture
def hooks() -> Iterator[tuple[Hooks, str]]:
    state = Hooks()
    app = FastAPI()

    @app.api_route("/fast/{rest:path}", methods=["POST", "PUT"])
    async def fast(request: Request, rest: str) -> Response:
        await request.body()
        state.fast.append(rest)
        return Response(status_code=200)

    @app.api_route("/stuck/{rest:path}", methods=["POST", "PUT"])
    async def stuck(rest: str) -> Response:
        state.stuck += 1
        while not state.release.is_set():
            await asyncio.sleep(0.05)
        return Response(status_code=200)

    @app.api_route("/endless/{rest:path}", methods=["POST", "PUT"])
    async def endless(request: Request, rest: str) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            # Far more than anyone should read (64 GiB), stopping once the reader has gone.
            while state.endless_sent < 1_000_000 and not await request.is_disconnected():
                state.endless_sent += 1
                yield b"x" * 65536

        return StreamingResponse(chunks(), status_code=200)

    with serving(app) as url:
        try:
            yield state, url
        finally:
            state.release.set()


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    yield from api_on(db_url, ApiSettings(jwt_secret=SECRET, subscription_allowed_endpoints=LOOPBACK))


@pytest.fixture
def deliverer(api: Api) -> Iterator[None]:
    yield from delivering(api, DELIVERER)


def _subscription(endpoint: str, criteria: str = "DiagnosticReport?status=final", **extra: Any) -> dict[str, Any]:
    channel = {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json", **extra}
    return {"resourceType": "Subscription", "status": "requested", "reason": "test", "criteria": criteria, "channel": channel}


def _post(api: Api, scopes: list[str], body: dict[str, Any], subject: str = "ehr-interface") -> httpx.Response:
    return httpx.post(f"{api.url}/fhir/{body['resourceType']}", json=body, headers={**api.token(scopes, subject=subject), **FHIR_JSON})


def _report(api: Api) -> str:
    created = _post(api, ["system/*.cruds"], {**example("DiagnosticReport-f201.json"), "status": "final"})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_subscribing_needs_read_scope_on_what_the_criteria_search(api: Api) -> None:
    endpoint = "http://127.0.0.1:9/hook"
    only_subscribe = ["system/Subscription.c"]
    assert _post(api, only_subscribe, _subscription(endpoint, "Patient?")).status_code == 403
    assert _post(api, only_subscribe, _subscription(endpoint)).status_code == 403
    assert _post(api, [*only_subscribe, "system/Patient.r"], _subscription(endpoint, "Patient?")).status_code == 201
    chained = _subscription(endpoint, "DiagnosticReport?subject:Patient.name=peter")
    assert _post(api, [*only_subscribe, "system/DiagnosticReport.rs"], chained).status_code == 403
    assert _post(api, [*only_subscribe, "system/DiagnosticReport.rs", "system/Patient.s"], chained).status_code == 201


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:9000/",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/hook",
        "http://192.168.0.7/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "ftp://example.org/hook",
        "file:///etc/passwd",
    ],
)
def test_endpoints_in_private_ranges_are_refused_without_the_allow_list(db_url: str, endpoint: str) -> None:
    for api in api_on(db_url, ApiSettings(jwt_secret=SECRET)):
        refused = _post(api, ["system/*.cruds"], _subscription(endpoint))
        assert refused.status_code == 422, refused.text
        assert "endpoint" in refused.json()["issue"][0]["diagnostics"]


def test_the_endpoint_is_checked_again_when_sending(api: Api, hooks: tuple[Hooks, str]) -> None:
    state, url = hooks
    assert _post(api, ["system/*.cruds"], _subscription(f"{url}/fast")).status_code == 201
    _report(api)
    # A deliverer without the allow-list (as after the admin removed the entry) refuses to connect.
    for _ in delivering(api, ApiSettings(**{**DELIVERER.model_dump(), "subscription_allowed_endpoints": []})):

        def refused() -> bool:
            with session_scope(api.engine) as session:
                return any("refused" in r.last_error for r in session.scalars(select(SubscriptionDelivery)))

        wait_for(refused, "a refused delivery")
    assert state.fast == []


@pytest.mark.usefixtures("deliverer")
def test_a_stuck_endpoint_holds_up_no_other_subscription(api: Api, hooks: tuple[Hooks, str]) -> None:
    state, url = hooks
    for path in ("stuck", "fast"):
        assert _post(api, ["system/*.cruds"], _subscription(f"{url}/{path}")).status_code == 201
    reports = [_report(api) for _ in range(3)]
    wait_for(lambda: state.stuck == 1 and len(state.fast) == 3, "every notification to the fast endpoint", timeout=20)
    assert state.fast == [f"DiagnosticReport/{r}" for r in reports]
    assert state.stuck == 1  # the stuck one still waits on its first, in order


@pytest.mark.usefixtures("deliverer")
def test_an_endless_answer_is_read_only_in_part(api: Api, hooks: tuple[Hooks, str]) -> None:
    state, url = hooks
    assert _post(api, ["system/*.cruds"], _subscription(f"{url}/endless")).status_code == 201
    _report(api)

    def delivered() -> bool:
        with session_scope(api.engine) as session:
            return subscriptions.pending(session) == 0

    wait_for(delivered, "the notification acknowledged", timeout=20)


@pytest.mark.usefixtures("deliverer")
def test_every_delivery_is_audited_as_a_disclosure(api: Api, hooks: tuple[Hooks, str]) -> None:
    _state, url = hooks
    created = _post(api, ["system/*.cruds"], _subscription(f"{url}/fast"))
    report = _report(api)

    def audited() -> list[AuditEvent]:
        with session_scope(api.engine) as session:
            return list(session.scalars(select(AuditEvent).where(AuditEvent.subtype == "notification-sent")))

    wait_for(lambda: bool(audited()), "the delivery's audit record")
    record = audited()[0]
    assert record.type_code == "110106" and record.entity_what == f"DiagnosticReport/{report}/_history/1"
    assert record.detail["subscription"] == f"Subscription/{created.json()['id']}"
    assert record.detail["endpoint"] == "127.0.0.1" and record.outcome == "0"


def test_only_the_owner_or_an_admin_sees_and_changes_the_channel_headers(api: Api) -> None:
    posing = {"url": "urn:doctorai:subscription-owner", "valueString": "someone-else"}
    body = {**_subscription("http://127.0.0.1:9/hook", header=["Authorization: Bearer ehr-secret"]), "extension": [posing]}
    created = _post(api, ["system/*.cruds"], body, subject="owner-client")
    assert created.status_code == 201
    sid = created.json()["id"]
    assert created.json()["channel"]["header"] == ["Authorization: Bearer ehr-secret"]
    assert created.json()["extension"] == [{"url": "urn:doctorai:subscription-owner", "valueString": "owner-client"}]

    def seen(headers: dict[str, str]) -> list[Any]:
        got = [httpx.get(f"{api.url}/fhir/Subscription/{sid}", headers=headers).json()]
        got.append(httpx.get(f"{api.url}/fhir/Subscription/{sid}/_history/1", headers=headers).json())
        got += [e["resource"] for e in httpx.get(f"{api.url}/fhir/Subscription", headers=headers).json()["entry"]]
        got += [e["resource"] for e in httpx.get(f"{api.url}/fhir/Subscription/_history", headers=headers).json()["entry"]]
        batch = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": f"Subscription/{sid}"}}]}
        got.append(httpx.post(f"{api.url}/fhir", json=batch, headers={**headers, **FHIR_JSON}).json()["entry"][0]["resource"])
        return [r["channel"]["header"] for r in got]

    other = api.token(["system/*.cruds"], subject="other-client")
    assert seen(other) == [["Authorization: [masked]"]] * 5
    assert seen(api.token(["system/*.cruds"], subject="owner-client")) == [["Authorization: Bearer ehr-secret"]] * 5
    admin = {"Authorization": api.role("admin", scopes=["system/*.cruds"])["Authorization"]}
    assert seen(admin) == [["Authorization: Bearer ehr-secret"]] * 5
    # Someone else cannot change or remove it.
    stolen = {**created.json(), "channel": {**created.json()["channel"], "endpoint": "http://127.0.0.1:9/mine"}}
    assert httpx.put(f"{api.url}/fhir/Subscription/{sid}", json=stolen, headers={**other, **FHIR_JSON}).status_code == 403
    assert httpx.delete(f"{api.url}/fhir/Subscription/{sid}", headers=other).status_code == 403
    changed = httpx.put(f"{api.url}/fhir/Subscription/{sid}", json=stolen, headers={**admin, **FHIR_JSON})
    assert changed.status_code == 200 and changed.json()["extension"][0]["valueString"] == "owner-client"
