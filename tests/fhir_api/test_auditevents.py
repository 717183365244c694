"""The audit trail over FHIR: a compliance officer's AuditEvent searches, on SQLite and PostgreSQL.

The records are written by the real API routes (creates, reads, searches, a refused token), then
searched the way an auditor would, e.g. "who looked at this patient's reports last month".
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from audit import log as audit_log
from audit.records import INSTANCE_STORED, AuditRecord
from storage.db import session_scope
from tests.fhir_api.conftest import Api, api_on
from tests.fhir_api.test_interactions import FHIR_JSON, outcome

AUDITOR = {"scopes": ["system/AuditEvent.rs"], "roles": ["auditor"]}
STUDY_UID = "1.2.826.0.1.3680043.8.498.4242"


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    """The API on SQLite and on PostgreSQL: the patient search reads JSON detail, which differs by dialect."""
    yield from api_on(database_url)


def _token(api: Api, subject: str, scopes: list[str], roles: list[str] | None = None) -> dict[str, str]:
    from fhir_api.auth.tokens import issue_token

    value = issue_token(api.settings, subject=subject, scopes=scopes, roles=roles or [])
    return {"Authorization": f"Bearer {value}"}


def _report(rid: str, patient: str) -> dict[str, object]:
    return {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


@pytest.fixture
def trail(api: Api) -> Api:
    """A day of work through the API: a RIS stores two patients' reports, two EHRs read and search them."""
    ris = _token(api, "ris", ["system/*.cruds"])
    for patient in ("p1", "p2"):
        body = {"resourceType": "Patient", "id": patient}
        assert httpx.put(f"{api.url}/fhir/Patient/{patient}", json=body, headers={**ris, **FHIR_JSON}).status_code == 201
    for rid, patient in (("r1", "p1"), ("r2", "p1"), ("r3", "p2")):
        response = httpx.put(f"{api.url}/fhir/DiagnosticReport/{rid}", json=_report(rid, patient), headers={**ris, **FHIR_JSON})
        assert response.status_code == 201, response.text
    ehr_a = _token(api, "ehr-a", ["system/DiagnosticReport.rs"])
    ehr_b = _token(api, "ehr-b", ["system/DiagnosticReport.rs"])
    assert httpx.get(f"{api.url}/fhir/DiagnosticReport/r1", headers=ehr_a).status_code == 200
    assert httpx.get(f"{api.url}/fhir/DiagnosticReport?patient=p1", headers=ehr_b).json()["total"] == 2
    assert httpx.get(f"{api.url}/fhir/DiagnosticReport/r3", headers=ehr_b).status_code == 200
    # A forged token: refused and audited.
    forged = {"Authorization": "Bearer " + ehr_a["Authorization"].split()[1][:-4] + "AAAA"}
    assert httpx.get(f"{api.url}/fhir/DiagnosticReport/r1", headers=forged).status_code == 401
    # The DICOM listener's record of a stored instance, as it writes it (entity: the SOP instance).
    with session_scope(api.engine) as session:
        audit_log.append(
            session,
            AuditRecord(hop=INSTANCE_STORED, correlation_id="c-1", agent_who="ae:MODALITY", entity_what="1.2.3.4",
                        detail={"study_uid": STUDY_UID}),
        )
    return api


def _search(api: Api, query: str) -> list[AuditEvent]:
    response = httpx.get(f"{api.url}/fhir/AuditEvent?{query}", headers=_token(api, "officer", **AUDITOR))
    assert response.status_code == 200, response.text
    bundle = Bundle.model_validate_json(response.content)
    found = [AuditEvent.model_validate(e.resource.model_dump()) for e in bundle.entry or []]  # type: ignore[union-attr]
    assert bundle.total == len(found) or "_count" in query
    return found


def _who(events: list[AuditEvent]) -> set[tuple[str, str]]:
    return {(e.agent[0].who.identifier.value, e.subtype[0].code) for e in events}  # type: ignore[index,union-attr]


def test_who_looked_at_this_patients_reports_last_month(trail: Api) -> None:
    since = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
    looked = _search(trail, f"patient=Patient/p1&date=ge{since}&subtype=resource-read,resource-searched")
    assert _who(looked) == {("ehr-a", "resource-read"), ("ehr-b", "resource-searched")}
    search_record = next(e for e in looked if e.subtype[0].code == "resource-searched")  # type: ignore[index]
    disclosed = {e.what.reference for e in search_record.entity or [] if e.what and e.what.reference}  # type: ignore[union-attr]
    assert {"DiagnosticReport/r1", "DiagnosticReport/r2", "Patient/p1"} <= disclosed
    # Changes to the patient's record show too, and nothing of p2's.
    everything = _search(trail, "patient=p1")
    assert ("ris", "resource-created") in _who(everything)
    assert all("p2" not in e.model_dump_json() for e in everything)
    # Nothing before last month.
    assert _search(trail, f"patient=p1&date=lt{since}") == []


def test_searches_by_agent_entity_type_action_outcome(trail: Api) -> None:
    assert {s for _, s in _who(_search(trail, "agent=ehr-b"))} == {"resource-searched", "resource-read"}
    assert _who(_search(trail, "agent:identifier=urn:doctorai:agent|ehr-a&action=R")) == {("ehr-a", "resource-read")}
    about_r1 = _search(trail, "entity=DiagnosticReport/r1")
    assert _who(about_r1) == {("ris", "resource-created"), ("ehr-a", "resource-read")}
    queries = _search(trail, "type=http://dicom.nema.org/resources/ontology/DCM|110112")
    assert [e.entity[0].role.code for e in queries] == ["24"]  # type: ignore[index,union-attr]
    refused = _search(trail, "subtype=authentication-failed&outcome=4")
    assert len(refused) == 1 and refused[0].agent[0].network.address == "127.0.0.1"  # type: ignore[index,union-attr]
    study = _search(trail, f"entity-identifier=urn:dicom:uid|urn:oid:{STUDY_UID}")
    assert _who(study) == {("ae:MODALITY", "instance-stored")}
    assert _search(trail, "entity-identifier=1.2.3.4")[0].id == study[0].id


def test_pages_reads_and_the_use_of_the_trail_is_audited(trail: Api) -> None:
    auditor = _token(trail, "officer", **AUDITOR)
    first = httpx.get(f"{trail.url}/fhir/AuditEvent?_count=2", headers=auditor).json()
    assert len(first["entry"]) == 2 and first["total"] >= 8
    following = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = httpx.get(following, headers=auditor).json()
    assert {e["resource"]["id"] for e in second["entry"]}.isdisjoint({e["resource"]["id"] for e in first["entry"]})
    newest = first["entry"][0]["resource"]["id"]
    read = httpx.get(f"{trail.url}/fhir/AuditEvent/{newest}", headers=auditor)
    assert read.status_code == 200 and AuditEvent.model_validate_json(read.content).id == newest
    outcome(httpx.get(f"{trail.url}/fhir/AuditEvent/999999", headers=auditor), 404, "not-found")
    used = _search(trail, "subtype=audit-log-used&agent=officer")
    assert len(used) >= 3  # two searches and a read before this one


def test_only_auditors_and_never_changes(trail: Api) -> None:
    url = f"{trail.url}/fhir/AuditEvent"
    outcome(httpx.get(url), 401, "login")
    outcome(httpx.get(url, headers=_token(trail, "ris", ["system/*.cruds"], ["admin"])), 403, "forbidden")
    outcome(httpx.get(url, headers=_token(trail, "x", ["system/*.rs"], ["auditor"])), 403, "forbidden")
    outcome(httpx.get(url, headers=_token(trail, "x", ["system/AuditEvent.rs"])), 403, "forbidden")
    auditor = {**_token(trail, "officer", ["system/AuditEvent.cruds"], ["auditor"]), **FHIR_JSON}
    body = {"resourceType": "AuditEvent"}
    outcome(httpx.post(url, json=body, headers=auditor), 405, "not-supported")
    outcome(httpx.put(f"{url}/1", json=body, headers=auditor), 405, "not-supported")
    outcome(httpx.delete(f"{url}/1", headers=auditor), 405, "not-supported")
