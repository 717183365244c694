"""A short fuzz of each HTTP door (hypothesis): FHIR JSON bodies, search parameters, admin API bodies.

Whatever comes in, the answer is never a 5xx, an error is in the door's format (OperationOutcome
or problem details), and the door still serves a good request afterwards. The long runs are
benchmarks/faults.py's; these keep the suite honest about the same property in seconds.
"""

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from storage import fhir
from storage.fhir.definitions import SEARCH_PARAMS
from tests.fhir_api.conftest import Api

EXAMPLES = Path(__file__).parents[1] / "data" / "fhir"
FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TYPES = sorted(fhir.RESOURCE_CLASSES)
HUGE = 2**64

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
edge_strings = st.sampled_from(["9999-12-31", "0001-01-01T00:00:00+14:00", "", "banana", "Patient", "\x00", "💥" * 3, "a" * 300])


@pytest.fixture(scope="module")
def client(shared_api: Api) -> Any:
    with httpx.Client(base_url=shared_api.url, headers=shared_api.token(["system/*.cruds"]), timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def admin(shared_api: Api) -> Any:
    with httpx.Client(base_url=f"{shared_api.url}/admin", headers=shared_api.role("admin"), timeout=30) as c:
        yield c


def _examples() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.json"))]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        found += _paths(child, (*path, key))
    return found


@st.composite
def mutated_resources(draw: st.DrawFn) -> dict[str, Any]:
    """An official example with a few of its elements replaced by anything at all."""
    data: dict[str, Any] = json.loads(json.dumps(draw(st.sampled_from(_examples()))))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = draw(json_values | edge_strings)
    return data


def _sound(response: httpx.Response, kind: str) -> None:
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith(kind), response.headers
        assert response.headers["x-content-type-options"] == "nosniff"


def _still_serving(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200


@FUZZ
@given(body=mutated_resources() | json_values, kind=st.sampled_from([*TYPES, ""]))
@example(body={"resourceType": "Patient", "gender": "banana"}, kind="Patient")
@example(body={"resourceType": "Patient", "birthDate": "9999-12-31"}, kind="Patient")
@example(body={"resourceType": "Bundle", "type": "batch", "entry": [{"resource": {"resourceType": ["Patient"]}}]}, kind="")
@example(body={"resourceType": "Observation", "status": "final", "code": None}, kind="Observation")
def test_fhir_json_bodies(client: httpx.Client, body: Any, kind: str) -> None:
    path = f"/fhir/{kind}" if kind else "/fhir"
    if isinstance(body, dict) and not kind and body.get("resourceType") != "Bundle":
        body = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": body, "request": {"method": "POST", "url": str(body.get("resourceType"))}}]}
    _sound(client.post(path, content=json.dumps(body), headers={"Content-Type": "application/fhir+json"}), "application/fhir+json")
    _still_serving(client)


@st.composite
def search_items(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    kind = draw(st.sampled_from(TYPES))
    names = [*SEARCH_PARAMS.get(kind, {}), "_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total", "_cursor", "_format"]
    modifiers = ["", ":exact", ":contains", ":missing", ":not", ":Patient", ".name", ":Patient.identifier", ":text"]
    prefixes = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]
    values = st.one_of(
        st.text(max_size=30),
        st.builds(lambda p, d: p + d, st.sampled_from(prefixes), edge_strings | st.dates().map(str) | st.text(max_size=12)),
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.lists(st.text(max_size=8), max_size=5).map(",".join),
        st.sampled_from(["a|b", "|", "\\,", "Patient/x", "DiagnosticReport:subject", "-_lastUpdated"]),
    )
    keys = st.builds(lambda n, m: n + m, st.sampled_from(names), st.sampled_from(modifiers)) | st.text(max_size=10)
    return kind, draw(st.lists(st.tuples(keys, values), max_size=6))


@FUZZ
@given(query=search_items())
@example(query=("Patient", [("birthdate", "ap9999-12-31")]))
@example(query=("Patient", [("_count", "-2")]))
@example(query=("Patient", [("_cursor", "eyJkIjoibmV4dCIsImsiOlsxLDIsM119")]))
def test_search_parameters(client: httpx.Client, query: tuple[str, list[tuple[str, str]]]) -> None:
    kind, items = query
    _sound(client.get(f"/fhir/{kind}", params=items), "application/fhir+json")
    _sound(client.get(f"/fhir/{kind}/_history", params=items), "application/fhir+json")
    _still_serving(client)


big_ints = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from([HUGE, -HUGE, 2**63, 2**63 - 1, 0, -1])
admin_calls = st.one_of(
    st.tuples(st.just("PUT"), st.just("/peers/FUZZ"), st.fixed_dictionaries({}, optional={"max_associations": big_ints, "max_pdu": big_ints, "quiet_period_seconds": json_values, "host": json_values})),
    st.tuples(st.just("POST"), st.just("/rules"), st.fixed_dictionaries({"name": st.text(min_size=1, max_size=10), "hold": st.just(True)}, optional={"priority": big_ints, "trigger": json_values, "match": json_values})),
    st.tuples(st.just("POST"), st.just("/dead-letters/replay"), st.fixed_dictionaries({"ids": st.lists(big_ints, max_size=3)})),
    st.tuples(st.just("POST"), st.just("/destinations"), st.dictionaries(st.sampled_from(["name", "kind", "host", "port", "url", "ae_title"]), json_values | big_ints)),
    st.tuples(st.just("GET"), st.builds(lambda p, o, l: f"{p}?offset={o}&limit={l}", st.sampled_from(["/dead-letters", "/hl7/messages", "/jobs", "/deliveries", "/studies"]), big_ints, big_ints), st.none()),
    st.tuples(st.just("GET"), st.builds(lambda p, i: f"{p}/{i}", st.sampled_from(["/dead-letters", "/rules", "/destinations"]), big_ints), st.none()),
)


@FUZZ
@given(call=admin_calls)
@example(call=("PUT", "/peers/FUZZ", {"max_associations": HUGE}))
@example(call=("GET", f"/dead-letters?offset={HUGE}", None))
def test_admin_bodies(admin: httpx.Client, client: httpx.Client, call: tuple[str, str, Any]) -> None:
    method, path, body = call
    response = admin.request(method, path, json=body) if body is not None else admin.request(method, path)
    _sound(response, "application/problem+json")
    _still_serving(client)
