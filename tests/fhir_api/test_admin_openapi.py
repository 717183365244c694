"""The README's table of admin paths and the admin API's OpenAPI document name the same paths and methods."""

import re
from pathlib import Path

import httpx

from tests.fhir_api.conftest import Api

README = Path(__file__).resolve().parents[2] / "README.md"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# One cell entry: `GET PUT DELETE /admin/peers/{ae_title}`.
ENTRY = re.compile(r"`((?:(?:" + "|".join(METHODS) + r") )+)(/admin/[^`\s]*)`")


def readme_operations() -> set[tuple[str, str]]:
    """(method, path) of every entry in the first column of the README's admin table."""
    section = README.read_text().split("## Auto-routing and the admin API", 1)[1].split("\n## ", 1)[0]
    rows = section.split("| methods and paths | what |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    assert rows and all(row.startswith("| `") for row in rows), "the admin table's rows start with a path"
    found = set()
    for row in rows:
        first_column = row.split(" | ", 1)[0]
        entries = ENTRY.findall(first_column)
        assert entries, f"no `METHODS /admin/path` entry in {first_column!r}"
        found |= {(method, path) for methods, path in entries for method in methods.split()}
    return found


def test_the_readme_lists_every_admin_path_and_no_other(api: Api) -> None:
    answer = httpx.get(f"{api.url}/admin/openapi.json", headers=api.role("operator"))
    assert answer.status_code == 200
    documented = {
        (method.upper(), "/admin" + path)
        for path, operations in answer.json()["paths"].items()
        for method in operations
        if method.upper() in METHODS
    }
    listed = readme_operations()
    assert sorted(documented - listed) == [], "in the OpenAPI document, not in the README's admin table"
    assert sorted(listed - documented) == [], "in the README's admin table, not in the OpenAPI document"
