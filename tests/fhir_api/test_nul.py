"""A NUL (U+0000) in a request is refused with 400 before any route, on SQLite and PostgreSQL (issue 18's fuzzing:
PostgreSQL text cannot hold one, and searches, writes and admin filters carrying it answered 500)."""

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.fhir_api.conftest import Api, api_on

PATIENT = {"resourceType": "Patient", "name": [{"family": "Nul"}]}


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    """The API on SQLite and on PostgreSQL."""
    yield from api_on(database_url)


def _outcome(answer: httpx.Response) -> str:
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/fhir+json")
    (issue,) = answer.json()["issue"]
    assert issue["code"] == "invalid"
    return str(issue["diagnostics"])


def test_a_nul_in_a_search_or_a_resource_is_refused_as_invalid(api: Api) -> None:
    headers = api.token(["system/*.cruds"])
    assert "NUL" in _outcome(httpx.get(f"{api.url}/fhir/Patient", params={"name": "a\x00b"}, headers=headers))
    body = json.dumps({**PATIENT, "name": [{"family": "a\x00b"}]})
    fhir_json = {**headers, "Content-Type": "application/fhir+json"}
    assert "NUL" in _outcome(httpx.post(f"{api.url}/fhir/Patient", content=body, headers=fhir_json))
    form = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    assert "NUL" in _outcome(httpx.post(f"{api.url}/fhir/Patient/_search", content=b"name=a%00b", headers=form))
    # An escaped backslash before "u0000" is text, not a NUL: stored as sent.
    literal = json.dumps({**PATIENT, "name": [{"family": "a\\u0000b"}]})
    created = httpx.post(f"{api.url}/fhir/Patient", content=literal, headers=fhir_json)
    assert created.status_code == 201, created.text
    assert created.json()["name"][0]["family"] == "a\\u0000b"
    # The door still serves a good request.
    assert httpx.get(f"{api.url}/fhir/Patient", params={"name": "Nul"}, headers=headers).status_code == 200


def test_a_nul_in_an_admin_filter_or_body_is_a_problem(api: Api) -> None:
    admin = api.role("admin")
    for answer in (
        httpx.get(f"{api.url}/admin/studies", params={"patient_id": "a\x00"}, headers=admin),
        httpx.post(f"{api.url}/admin/rules", json={"name": "a\x00", "hold": True}, headers=admin),
    ):
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert "NUL" in answer.json()["detail"]
    assert httpx.get(f"{api.url}/admin/studies", headers=admin).status_code == 200
