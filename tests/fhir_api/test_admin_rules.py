"""Routing rules through the admin API: CRUD with audit, and dry runs of saved and draft rules on a stored study."""

import json

import httpx
from sqlalchemy import select

from storage.db import session_scope
from storage.instances import ReceivedInstance
from storage.tables.audit import AuditEvent
from storage.tables.index import Study
from storage.tables.pipeline import OutboxEvent
from tests.fhir_api.conftest import Api
from tests.studies import store_study

UID = "1.2.826.0.1.3680043.8.498.74001"
HOLD_CR = {"name": "hold-all-cr", "priority": 1, "match": {"modalities": ["CR"]}, "hold": True}


def test_rule_crud_is_validated_and_audited(api: Api) -> None:
    admin = api.role("admin")
    created = httpx.post(f"{api.url}/admin/rules", json=HOLD_CR, headers=admin)
    assert created.status_code == 201, created.text
    rule_id = created.json()["id"]
    assert httpx.post(f"{api.url}/admin/rules", json=HOLD_CR, headers=admin).status_code == 409
    no_action = httpx.post(f"{api.url}/admin/rules", json={"name": "idle"}, headers=admin)
    assert no_action.status_code == 422 and no_action.headers["content-type"] == "application/problem+json"
    bad_regex = {"name": "x", "match": {"study_description": "("}, "hold": True}
    assert httpx.post(f"{api.url}/admin/rules", json=bad_regex, headers=admin).status_code == 422
    listed = httpx.get(f"{api.url}/admin/rules", headers=api.role("operator")).json()["items"]
    assert listed[0]["name"] == "hold-all-cr"  # priority 1 comes first
    changed = httpx.put(f"{api.url}/admin/rules/{rule_id}", json={**HOLD_CR, "priority": 7}, headers=admin)
    assert changed.status_code == 200 and changed.json()["priority"] == 7
    assert httpx.put(f"{api.url}/admin/rules/9999", json=HOLD_CR, headers=admin).status_code == 404
    assert httpx.delete(f"{api.url}/admin/rules/{rule_id}", headers=admin).status_code == 204
    assert httpx.get(f"{api.url}/admin/rules/{rule_id}", headers=admin).status_code == 404
    with session_scope(api.engine) as session:
        records = list(session.scalars(select(AuditEvent).where(AuditEvent.subtype == "admin-configuration")))
    assert [r.detail["method"] for r in records] == ["POST", "PUT", "DELETE"]
    assert json.loads(records[1].detail["before"])["priority"] == 1
    assert json.loads(records[1].detail["after"])["priority"] == 7


def test_dry_runs_say_what_would_happen_and_do_nothing(api: Api, rg1: ReceivedInstance) -> None:
    store_study(api.engine, rg1, study_uid=UID, status="ready")
    admin = api.role("admin")
    rule_id = httpx.post(f"{api.url}/admin/rules", json=HOLD_CR, headers=admin).json()["id"]
    saved = httpx.post(f"{api.url}/admin/rules/{rule_id}/dry-run", json={"study_uid": UID}, headers=admin)
    assert saved.status_code == 200, saved.text
    assert saved.json()["held_by"] == "hold-all-cr"
    draft = {"name": "cr-to-pacs", "match": {"modalities": ["CR"]}, "forward": ["pacs"]}
    answer = httpx.post(f"{api.url}/admin/rules/dry-run", json={"study_uid": UID, "rule": draft}, headers=admin)
    assert answer.status_code == 200, answer.text
    assert [(f["destination"], f["instance_count"]) for f in answer.json()["forwards"]] == [("pacs", 1)]
    mr_only = {**draft, "match": {"modalities": ["MR"]}}
    nothing = httpx.post(f"{api.url}/admin/rules/dry-run", json={"study_uid": UID, "rule": mr_only}, headers=admin)
    assert nothing.json()["forwards"] == [] and nothing.json()["matched"] == []
    unknown = httpx.post(f"{api.url}/admin/rules/dry-run", json={"study_uid": "1.2.3", "rule": draft}, headers=admin)
    assert unknown.status_code == 404
    with session_scope(api.engine) as session:
        assert session.get_one(Study, UID).status == "ready"
        assert session.scalars(select(OutboxEvent)).all() == []
