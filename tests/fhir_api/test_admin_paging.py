"""Issue 16: one list shape everywhere in the admin API, `{total, items, limit, offset}` with `limit`,
`offset` and `sort` (validated), and numbers too large for the database refused as 422, never a 500."""

from collections.abc import Iterator

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from fhir_api.admin.app import create_admin_app
from fhir_api.config import ApiSettings
from storage.db import session_scope
from storage.instances import ReceivedInstance
from storage.tables.index import Study
from tests.fhir_api.conftest import Api
from tests.studies import store_study

UIDS = ["1.2.826.0.1.3680043.8.498.90001", "1.2.826.0.1.3680043.8.498.90002", "1.2.826.0.1.3680043.8.498.90003"]


@pytest.fixture
def stored(api: Api, rg1: ReceivedInstance) -> Iterator[Api]:
    """Three studies of three patients."""
    for n, uid in enumerate(UIDS):
        store_study(api.engine, rg1, study_uid=uid, status="ready")
        with session_scope(api.engine) as session:
            session.get_one(Study, uid).patient_id = f"P{3 - n}"
    yield api


def _list_routes() -> list[str]:
    """Every GET route of the admin API without a path parameter that answers a list (not a dashboard or a state)."""
    app = create_admin_app(ApiSettings())
    return sorted(
        c.path
        for c in iter_route_contexts(app.routes)
        if "GET" in (c.methods or ()) and "{" not in c.path and c.path not in ("/openapi.json", "/overview", "/stats", "/audit/verification")
    )


def test_every_list_answers_one_shape(api: Api) -> None:
    routes = _list_routes()
    assert "/studies" in routes and "/peers" in routes and "/rules/warnings" in routes and "/users" in routes
    for route in routes:
        role = "auditor" if route.startswith("/audit") else "admin"
        answer = httpx.get(f"{api.url}/admin{route}", params={"limit": 2, "offset": 1}, headers=api.role(role))
        assert answer.status_code == 200, (route, answer.text)
        body = answer.json()
        assert set(body) == {"total", "items", "limit", "offset"}, route
        assert body["limit"] == 2 and body["offset"] == 1 and isinstance(body["items"], list), route


def test_lists_sort_on_named_columns_only(stored: Api) -> None:
    headers = stored.role("operator")
    ascending = httpx.get(f"{stored.url}/admin/studies", params={"sort": "patient"}, headers=headers).json()
    assert [s["patient_id"] for s in ascending["items"]] == ["P1", "P2", "P3"]
    descending = httpx.get(f"{stored.url}/admin/studies", params={"sort": "-patient", "limit": 2}, headers=headers).json()
    assert [s["patient_id"] for s in descending["items"]] == ["P3", "P2"] and descending["total"] == 3
    refused = httpx.get(f"{stored.url}/admin/studies", params={"sort": "password"}, headers=headers)
    assert refused.status_code == 422 and "sort on" in refused.text
    rules = httpx.get(f"{stored.url}/admin/rules", params={"sort": "-priority"}, headers=headers).json()["items"]
    assert [r["priority"] for r in rules] == sorted((r["priority"] for r in rules), reverse=True)
    by_patient = httpx.get(f"{stored.url}/admin/studies", params={"patient_id": "P2"}, headers=headers).json()
    assert [s["study_uid"] for s in by_patient["items"]] == [UIDS[1]]


@pytest.mark.parametrize(
    ("method", "path", "params", "body"),
    [
        ("GET", "/dead-letters/99999999999999999999", None, None),
        ("GET", "/studies", {"offset": 10**30}, None),
        ("GET", "/studies", {"limit": 10**30}, None),
        ("GET", "/deliveries", {"destination_id": 10**20}, None),
        ("GET", "/destinations/4294967296", None, None),
        ("POST", "/dead-letters/replay", None, {"ids": [10**30]}),
        ("POST", "/studies/1.2.3/forward", None, {"destination_id": 10**20}),
    ],
)
def test_huge_numbers_are_refused_not_failed(api: Api, method: str, path: str, params: dict[str, int] | None, body: object) -> None:
    answer = httpx.request(method, f"{api.url}/admin{path}", params=params, json=body, headers=api.role("admin"))
    assert answer.status_code == 422, answer.text
