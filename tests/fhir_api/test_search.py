"""Parsing FHIR search queries."""

import pytest

from storage.errors import InvalidSearch
from storage.fhir.criteria import TokenValue
from fhir_api.fhir.search import MAX_COUNT, parse_query


def test_reference_and_token_forms_normalise() -> None:
    query = parse_query(
        "DiagnosticReport",
        [
            ("patient", "9RG1"),
            ("subject", "https://ehr.example/fhir/Patient/9RG1"),
            ("subject:Patient", "9RG1"),
            ("status", "|final,preliminary"),
            ("_count", "1000"),
        ],
        strict=True,
    )
    assert [(c.param, c.values) for c in query.criteria] == [
        ("patient", ("Patient/9RG1",)),
        ("subject", ("Patient/9RG1",)),
        ("subject", ("Patient/9RG1",)),
        ("status", (TokenValue("", "final"), TokenValue(None, "preliminary"))),
    ]
    assert query.count == MAX_COUNT
    assert query.unknown == ()


def test_unknown_parameters_and_includes() -> None:
    items = [("colour", "x"), ("status:text", "final"), ("_include", "DiagnosticReport:performer"), ("patient", "")]
    query = parse_query("DiagnosticReport", items, strict=False)
    assert query.unknown == ("colour", "status:text", "_include=DiagnosticReport:performer")
    assert query.criteria == ()  # an empty value is ignored
    with pytest.raises(InvalidSearch, match="colour"):
        parse_query("DiagnosticReport", items, strict=True)


def test_include_with_target_type() -> None:
    query = parse_query("DiagnosticReport", [("_include", "DiagnosticReport:subject:Patient")], strict=True)
    assert [i.target for i in query.includes] == ["Patient"]
    with pytest.raises(InvalidSearch):
        parse_query("DiagnosticReport", [("_include", "DiagnosticReport:subject:Group")], strict=True)


@pytest.mark.parametrize("value", ["-1", "ten", ""])
def test_bad_count_is_refused(value: str) -> None:
    with pytest.raises(InvalidSearch):
        parse_query("DiagnosticReport", [("_count", value)], strict=False)
