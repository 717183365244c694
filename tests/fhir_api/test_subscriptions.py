"""Subscription delivery against a real HTTP receiver that fails for a while, then recovers."""

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from fhir_api.config import ApiSettings
from fhir_api.subscriptions import delivery
from integration.backoff import backoff
from storage.fhir import subscriptions
from storage.db import session_scope
from tests.fhir_api.conftest import Api, serving
from tests.fhir_api.test_interactions import FHIR_JSON, example

FAST_RETRIES = ApiSettings(
    subscription_poll_seconds=0.05,
    subscription_retry_initial_seconds=0.1,
    subscription_retry_max_seconds=0.4,
    subscription_timeout_seconds=5,
)


@dataclass
class Receiver:
    """An EHR endpoint: answers 503 to the first `failures` requests, then 200, and keeps what it accepted."""

    failures: int
    refused: int = 0
    accepted: list[tuple[str, str, str, str]] = field(default_factory=list)  # method, path, auth header, versionId
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver(failures=6)
    app = FastAPI()

    @app.api_route("/hook/{rest:path}", methods=["POST", "PUT"])
    async def hook(request: Request, rest: str) -> Response:
        body = await request.body()
        with state.lock:
            if state.refused < state.failures:
                state.refused += 1
                return Response(status_code=503)
            version = ""
            if body:
                version = (await request.json())["meta"]["versionId"]
            state.accepted.append((request.method, request.url.path, request.headers.get("authorization", ""), version))
        return Response(status_code=200)

    with serving(app) as url:
        yield state, url


@pytest.fixture
def deliverer(api: Api) -> Iterator[None]:
    """The delivery loop of `python -m fhir_api.subscriptions`, in a thread of its own."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(delivery.run(api.engine, FAST_RETRIES, stop=stop),), daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=15)
        loop.close()


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll until `check()` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _report(http: httpx.Client, status: str) -> dict[str, object]:
    data = example("DiagnosticReport-f201.json")
    data["status"] = status
    response = http.post("/fhir/DiagnosticReport", json=data, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


@pytest.mark.usefixtures("deliverer")
def test_every_notification_arrives_once_after_the_endpoint_recovers(
    http: httpx.Client, api: Api, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    subscription = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "final imaging reports for the EHR",
        "criteria": "DiagnosticReport?status=final",
        "channel": {
            "type": "rest-hook",
            "endpoint": f"{url}/hook",
            "payload": "application/fhir+json",
            "header": ["Authorization: Bearer ehr-secret"],
        },
    }
    created = http.post("/fhir/Subscription", json=subscription, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    assert created.json()["status"] == "active"
    empty = {**subscription, "channel": {"type": "rest-hook", "endpoint": f"{url}/hook/empty"}}
    assert http.post("/fhir/Subscription", json=empty, headers=FHIR_JSON).status_code == 201

    finals = [_report(http, "final") for _ in range(3)]
    _report(http, "preliminary")  # does not match: no notification
    changed = {**finals[0], "conclusion": "amended reading"}
    assert http.put(f"/fhir/DiagnosticReport/{finals[0]['id']}", json=changed, headers=FHIR_JSON).status_code == 200

    # While the endpoint refuses, the Subscription says so (subscription.html: status "error").
    wait_for(lambda: http.get(f"/fhir/Subscription/{sid}").json()["status"] == "error", "status error")
    assert "503" in http.get(f"/fhir/Subscription/{sid}").json()["error"]

    expected = {(f"/hook/DiagnosticReport/{r['id']}", "1") for r in finals} | {(f"/hook/DiagnosticReport/{finals[0]['id']}", "2")}
    wait_for(lambda: len(state.accepted) >= 8, "every notification")
    # A fresh transaction per look: holding one open would block the deliverer's writes (SQLite
    # transactions take the write lock) and would never see its commits anyway.
    def queue_empty() -> bool:
        with session_scope(api.engine) as session:
            return subscriptions.pending(session) == 0

    wait_for(queue_empty, "an empty queue")
    full = [(path, version) for method, path, _auth, version in state.accepted if method == "PUT"]
    assert sorted(full) == sorted(expected)  # each once: nothing lost, nothing twice
    assert len(full) == len(set(full)) == 4
    assert full[0] == (f"/hook/DiagnosticReport/{finals[0]['id']}", "1")  # queued order kept
    assert all(auth == "Bearer ehr-secret" for method, _p, auth, _v in state.accepted if method == "PUT")
    empties = [(method, path) for method, path, _auth, _v in state.accepted if method == "POST"]
    assert empties == [("POST", "/hook/empty")] * 4  # no payload: an empty POST per notification
    assert state.refused == 6
    wait_for(lambda: http.get(f"/fhir/Subscription/{sid}").json()["status"] == "active", "status active again")
    assert "error" not in http.get(f"/fhir/Subscription/{sid}").json()
    with session_scope(api.engine) as session:
        assert subscriptions.pending(session) == 0


def test_backoff_doubles_up_to_the_maximum() -> None:
    settings = ApiSettings(subscription_retry_initial_seconds=5, subscription_retry_max_seconds=1800)
    first, maximum = settings.subscription_retry_initial_seconds, settings.subscription_retry_max_seconds
    waits = [backoff(n, first=first, maximum=maximum).total_seconds() for n in range(1, 12)]
    assert waits[:4] == [5, 10, 20, 40] and waits[-1] == 1800
