"""Required bindings: the generated table matches the official R4 definitions, and violations are found where they are."""

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

from storage.fhir import bindings

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "tests" / "data" / "fhir"
# Where `make fhir-definitions` unpacks the R4 definitions (tools/fhir_bindings.py says from where).
DEFINITIONS = Path(os.environ.get("DOCTORAI_FHIR_DEFINITIONS", ROOT / ".cache" / "fhir-definitions" / "package" / "dist" / "fhir" / "r4"))


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("fhir_bindings", ROOT / "tools" / "fhir_bindings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_is_what_the_r4_definitions_say() -> None:
    assert (DEFINITIONS / "profiles-resources.json").exists(), f"no R4 definitions at {DEFINITIONS}: run make fhir-definitions"
    generator = _generator()
    committed = json.loads((ROOT / "storage" / "fhir" / "bindings.json").read_text())
    assert generator.table(DEFINITIONS) == committed
    # Every required binding of every element of the served types, at the top level at least, is in it.
    structures, _value_sets, _code_systems = generator.load(DEFINITIONS)
    for kind in generator.RESOURCE_TYPES:
        for element in structures[kind]["snapshot"]["element"]:
            if element.get("binding", {}).get("strength") == "required" and element["path"].count(".") == 1:
                name = element["path"].split(".")[1]
                assert committed["types"][kind][name].startswith("code:"), element["path"]


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.json")))
def test_the_official_examples_break_no_binding(example: str) -> None:
    assert bindings.violations(json.loads((EXAMPLES / example).read_text())) == []


def test_codes_outside_their_value_sets_are_found_with_their_path() -> None:
    patient = {
        "resourceType": "Patient",
        "gender": "banana",
        "name": [{"use": "official"}, {"use": "nickname-ish"}],
        "contact": [{"telecom": [{"system": "pager", "use": "home"}, {"system": "pigeon"}]}],
        "identifier": [{"use": "usual", "assigner": {"identifier": {"use": "sometimes"}}}],
        "extension": [{"url": "http://example.org/x", "valueCode": "anything-goes"}],
        "contained": [{"resourceType": "Observation", "status": "guessed", "code": {"text": "x"}}],
        "photo": [{"contentType": "image/png"}, {"contentType": "not a media type"}],
    }
    found = {v.expression: v.code for v in bindings.violations(patient)}
    assert found == {
        "Patient.gender": "banana",
        "Patient.name[1].use": "nickname-ish",
        "Patient.contact[0].telecom[1].system": "pigeon",
        "Patient.identifier[0].assigner.identifier.use": "sometimes",
        "Patient.contained[0].status": "guessed",
        "Patient.photo[1].contentType": "not a media type",
    }


def test_bundles_are_checked_with_their_entries() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Patient", "gender": "female"}, "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Patient", "gender": "x"}, "request": {"method": "FETCH", "url": "Patient"}},
        ],
    }
    assert {v.expression for v in bindings.violations(bundle)} == {
        "Bundle.entry[1].resource.gender",
        "Bundle.entry[1].request.method",
    }
