"""The import layers of docs/architecture.md, checked on the source: imports only go down, never in a circle.

storage <- audit <- integration <- {dicom_listener, hl7_listener, fhir_api, results, inference} <- doctorai

The five services are processes that meet only through Kafka and the database, so none imports
another; `doctorai` (the command and the local stack) starts them all. Inside a package the
modules import each other without cycles, and the sub-packages that assemble an application
(fhir_api's admin and console) are imported only by the application itself.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {
    "storage": 0,
    "audit": 1,
    "integration": 2,
    "dicom_listener": 3,
    "hl7_listener": 3,
    "fhir_api": 3,
    "results": 3,
    "inference": 3,
    "doctorai": 4,
}
# Sub-packages that only these modules may import: what assembles them into an application.
TOPS = {
    "fhir_api.admin": {"fhir_api.app"},
    "fhir_api.console": {"fhir_api.app"},
}


def modules() -> dict[str, Path]:
    """Every module of our packages (migrations are Alembic's scripts, not modules we import)."""
    found = {}
    for package in LAYERS:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The modules of ours that `name` imports, anywhere in it (functions and TYPE_CHECKING blocks too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports."""
    known = modules()
    return {name: set(imports(name, path, known)) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_imports_only_go_down_the_layers() -> None:
    wrong = []
    for name, targets in graph().items():
        own = name.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if other != own and LAYERS[other] >= LAYERS[own]:
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    assert not cycles(graph())


def test_application_parts_are_imported_only_by_their_application() -> None:
    wrong = []
    for name, targets in graph().items():
        for top, allowed in TOPS.items():
            inside = name == top or name.startswith(top + ".")
            if inside or name in allowed:
                continue
            wrong += [f"{name} -> {t}" for t in targets if t == top or t.startswith(top + ".")]
    assert not wrong, "\n".join(sorted(wrong))


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_the_layer_check_sees_every_package() -> None:
    found = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert found - {"tests", "benchmarks"} == set(LAYERS)
