"""The OpenAPI documents declare every path parameter of every operation (issue 18)."""

import re

import httpx
import pytest

from tests.fhir_api.conftest import Api


@pytest.mark.parametrize("document", ["/openapi.json", "/admin/openapi.json"])
def test_every_path_parameter_is_declared(shared_api: Api, document: str) -> None:
    headers = shared_api.role("admin", scopes=["system/*.cruds"])
    spec = httpx.get(f"{shared_api.url}{document}", headers=headers).json()
    missing = []
    for path, operations in spec["paths"].items():
        wanted = set(re.findall(r"{([^}]+)}", path))
        shared = {p["name"] for p in operations.get("parameters", []) if p["in"] == "path"}
        for method, operation in operations.items():
            if method == "parameters":
                continue
            declared = shared | {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            missing += [f"{method.upper()} {path}: {name}" for name in sorted(wanted - declared)]
    assert not missing
