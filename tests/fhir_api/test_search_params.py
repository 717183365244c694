"""Search semantics on SQLite and PostgreSQL: tokens, dates, strings, references, chains, includes, sort, paging."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from storage import fhir
from fhir_api.fhir import search
from storage.fhir import store
from storage.db import session_scope

LOINC = "http://loinc.org"
MRN = "urn:oid:1.2.36.146.595.217.0.1"
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def _report(rid: str, *, patient: str, status: str, effective: str, code: str = "18748-4", study: str = "") -> fhir.DiagnosticReport:
    return fhir.DiagnosticReport(
        id=rid,
        status=status,
        code=fhir.CodeableConcept(coding=[fhir.Coding(system=LOINC, code=code)]),
        category=[fhir.CodeableConcept(coding=[fhir.Coding(system="http://terminology.hl7.org/CodeSystem/v2-0074", code="RAD")])],
        subject=fhir.Reference(reference=f"Patient/{patient}"),
        effectiveDateTime=effective,
        issued=T0,
        imagingStudy=[fhir.Reference(reference=f"ImagingStudy/{study}")] if study else None,
    )


@pytest.fixture
def loaded(db: Engine) -> Iterator[Engine]:
    """Two patients, their reports and a study, saved one second apart so _lastUpdated orders them."""
    resources: list[fhir.Resource] = [
        fhir.Patient(id="p1", identifier=[fhir.Identifier(system=MRN, value="12345")],
                     name=[fhir.HumanName(family="Chalmers", given=["Peter", "James"])], gender="male", birthDate="1974-12-25"),
        fhir.Patient(id="p2", identifier=[fhir.Identifier(system=MRN, value="67890")],
                     name=[fhir.HumanName(family="Müller", given=["Anna"])], gender="female", birthDate="1990-06"),
        fhir.ImagingStudy(id="s1", status="available", subject=fhir.Reference(reference="Patient/p1")),
        _report("r1", patient="p1", status="final", effective="2024-01-10T08:00:00Z", study="s1"),
        _report("r2", patient="p1", status="preliminary", effective="2024-02", code="24627-2"),
        _report("r3", patient="p2", status="final", effective="2023-12-31"),
        _report("r4", patient="p2", status="amended", effective="2024-02-15T23:30:00+01:00"),
    ]
    with session_scope(db) as session:
        for i, resource in enumerate(resources):
            store.save(session, resource, now=T0 + timedelta(seconds=i))
    yield db


def ids(engine: Engine, resource_type: str, query: str, *, count: int = 50) -> list[str]:
    """The ids a search finds, in the order of the searchset."""
    items = [tuple(p.split("=", 1)) for p in query.split("&") if p]
    parsed = search.parse_query(resource_type, [*items, ("_count", str(count))], strict=True)  # type: ignore[list-item]
    with session_scope(engine) as session:
        result = search.run(session, parsed, may_read=lambda _t: True)
    return [r.id or "" for r in result.matches]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=final", {"r1", "r3"}),
        ("status:not=final", {"r2", "r4"}),
        ("status=http://hl7.org/fhir/diagnostic-report-status|amended", {"r4"}),
        ("code=http://loinc.org|24627-2", {"r2"}),
        ("code=http://snomed.info/sct|24627-2", set()),
        ("code=|24627-2", set()),
        ("code=http://loinc.org|", {"r1", "r2", "r3", "r4"}),
        ("category=RAD&patient=p2", {"r3", "r4"}),
        ("date=2024-02", {"r2", "r4"}),
        ("date=ge2024-01-10", {"r1", "r2", "r4"}),
        ("date=gt2024-01-10", {"r2", "r4"}),
        ("date=lt2024-01-01", {"r3"}),
        ("date=le2024-01-10T08:00:00Z", {"r1", "r3"}),
        ("date=sa2024-02-01", {"r4"}),  # r4 is 2024-02-15T22:30Z
        ("date=eb2024-02-01", {"r1", "r3"}),
        ("date=ne2024-02", {"r1", "r3"}),
        ("date=2024-02-15", {"r4"}),
        ("date=ge2024-01-01&status=final", {"r1"}),
        ("issued=2024-03-01", {"r1", "r2", "r3", "r4"}),
        ("_lastUpdated=gt2024-03-01T12:00:04Z", {"r3", "r4"}),
        ("imaging-study:missing=false", {"r1"}),
        ("imaging-study:missing=true", {"r2", "r3", "r4"}),
        ("subject:Patient.identifier=urn:oid:1.2.36.146.595.217.0.1|67890", {"r3", "r4"}),
        ("patient.identifier=12345", {"r1", "r2"}),
        ("patient.family=mull", {"r3", "r4"}),
        ("patient=Patient/p1,p2&status=final", {"r1", "r3"}),
        ("_id=r1,r4", {"r1", "r4"}),
    ],
)
def test_report_search(loaded: Engine, query: str, expected: set[str]) -> None:
    assert set(ids(loaded, "DiagnosticReport", query)) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("family=chal", {"p1"}),
        ("family=CHALMERS", {"p1"}),
        ("family=muller", {"p2"}),  # accents and case do not matter (search.html#string)
        ("family:exact=Müller", {"p2"}),
        ("family:exact=muller", set()),
        ("name:contains=ame", {"p1"}),
        ("given=anna", {"p2"}),
        ("birthdate=1990", {"p2"}),
        ("birthdate=lt1980", {"p1"}),
        ("birthdate=1990-06-12", set()),
        ("gender=female", {"p2"}),
        ("identifier=urn:oid:1.2.36.146.595.217.0.1|12345", {"p1"}),
        ("identifier=67890", {"p2"}),
    ],
)
def test_patient_search(loaded: Engine, query: str, expected: set[str]) -> None:
    assert set(ids(loaded, "Patient", query)) == expected


def test_sort(loaded: Engine) -> None:
    assert ids(loaded, "DiagnosticReport", "") == ["r4", "r3", "r2", "r1"]  # newest _lastUpdated first
    assert ids(loaded, "DiagnosticReport", "_sort=date") == ["r3", "r1", "r2", "r4"]
    assert ids(loaded, "DiagnosticReport", "_sort=-date") == ["r2", "r4", "r1", "r3"]
    assert ids(loaded, "DiagnosticReport", "_sort=status,-_id") == ["r4", "r3", "r1", "r2"]


def test_includes_and_revincludes(loaded: Engine) -> None:
    query = search.parse_query(
        "Patient",
        [("_id", "p1"), ("_revinclude", "DiagnosticReport:patient"), ("_revinclude", "ImagingStudy:patient")],
        strict=True,
    )
    with session_scope(loaded) as session:
        result = search.run(session, query, may_read=lambda t: t != "ImagingStudy")
    assert [r.id for r in result.matches] == ["p1"]
    assert {(r.resource_type, r.id) for r in result.included} == {("DiagnosticReport", "r1"), ("DiagnosticReport", "r2")}
    query = search.parse_query(
        "DiagnosticReport", [("_id", "r1"), ("_include", "DiagnosticReport:subject"), ("_include", "DiagnosticReport:imaging-study")], strict=True
    )
    with session_scope(loaded) as session:
        result = search.run(session, query, may_read=lambda _t: True)
    assert {(r.resource_type, r.id) for r in result.included} == {("Patient", "p1"), ("ImagingStudy", "s1")}


def test_pages_stay_stable_while_reports_arrive(loaded: Engine) -> None:
    first = search.parse_query("DiagnosticReport", [("_count", "2")], strict=True)
    with session_scope(loaded) as session:
        page1 = search.run(session, first, may_read=lambda _t: True)
    assert [r.id for r in page1.matches] == ["r4", "r3"] and page1.next_key is not None
    assert page1.previous_key is None
    # New reports arrive between the two page requests; they sort first and must not shift page 2.
    with session_scope(loaded) as session:
        for i in range(3):
            store.save(session, _report(f"new{i}", patient="p1", status="final", effective="2024-03-01"))
    cursor = search.encode_cursor(search.Cursor("next", page1.next_key))
    second = search.parse_query("DiagnosticReport", [("_count", "2"), ("_cursor", cursor)], strict=True)
    with session_scope(loaded) as session:
        page2 = search.run(session, second, may_read=lambda _t: True)
    assert [r.id for r in page2.matches] == ["r2", "r1"]
    assert page2.next_key is None and page2.previous_key is not None
    back = search.parse_query(
        "DiagnosticReport", [("_count", "2"), ("_cursor", search.encode_cursor(search.Cursor("previous", page2.previous_key)))], strict=True
    )
    with session_scope(loaded) as session:
        page1_again = search.run(session, back, may_read=lambda _t: True)
    assert [r.id for r in page1_again.matches] == ["r4", "r3"]
    assert page1_again.total == 7


def test_summary_count_and_elements(loaded: Engine) -> None:
    query = search.parse_query("DiagnosticReport", [("status", "final"), ("_summary", "count")], strict=True)
    with session_scope(loaded) as session:
        result = search.run(session, query, may_read=lambda _t: True)
    assert result.total == 2 and result.matches == []
    query = search.parse_query("DiagnosticReport", [("_id", "r1"), ("_total", "none")], strict=True)
    with session_scope(loaded) as session:
        assert search.run(session, query, may_read=lambda _t: True).total is None
