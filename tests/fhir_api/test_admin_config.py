"""Configuration through the admin API: peers, destinations (secrets masked), models, clients, and the audit of each change."""

import json

import httpx
from sqlalchemy import select

from audit.verify import verify
from fhir_api.admin.access import MASK
from storage.db import session_scope
from storage.peers import get_peer
from storage.model_packages import active_model_version, add_model_package
from storage.tables.audit import AuditEvent
from storage.tables.outbound import Destination
from tests.fhir_api.conftest import Api


def _records(api: Api, subtype: str) -> list[AuditEvent]:
    with session_scope(api.engine) as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.subtype == subtype).order_by(AuditEvent.id)))


def test_peer_crud_reaches_the_listeners_table_and_is_audited(api: Api) -> None:
    admin = api.role("admin", subject="pacs-admin")
    settings = {"host": "10.1.2.3", "quiet_period_seconds": 2.5, "max_associations": 4, "duplicate_policy": "reject"}
    created = httpx.put(f"{api.url}/admin/peers/CT_ROOM1", json=settings, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["ae_title"] == "CT_ROOM1"
    changed = httpx.put(f"{api.url}/admin/peers/CT_ROOM1", json={**settings, "quiet_period_seconds": 10}, headers=admin)
    assert changed.status_code == 200
    with session_scope(api.engine) as session:
        peer = get_peer(session, ae_title="CT_ROOM1")
    assert peer is not None and peer.quiet_period_seconds == 10 and peer.host == "10.1.2.3"
    assert httpx.get(f"{api.url}/admin/peers", headers=admin).json()["items"][0]["duplicate_policy"] == "reject"
    bad = httpx.put(f"{api.url}/admin/peers/CT_ROOM1", json={"duplicate_policy": "maybe"}, headers=admin)
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    too_long = httpx.put(f"{api.url}/admin/peers/ABCDEFGHIJKLMNOPQ", json={}, headers=admin)
    assert too_long.status_code == 422
    assert httpx.delete(f"{api.url}/admin/peers/CT_ROOM1", headers=admin).status_code == 204
    assert httpx.get(f"{api.url}/admin/peers/CT_ROOM1", headers=admin).status_code == 404
    assert httpx.delete(f"{api.url}/admin/peers/CT_ROOM1", headers=admin).status_code == 404

    records = _records(api, "admin-configuration")
    assert [r.detail["method"] for r in records] == ["PUT", "PUT", "DELETE"]
    first, second, gone = records
    assert first.agent_who == "pacs-admin" and first.agent_address == "127.0.0.1"
    assert first.entity_what == "/admin/peers/CT_ROOM1" and first.type_code == "110113"
    assert json.loads(first.detail["before"]) is None
    assert json.loads(second.detail["before"])["quiet_period_seconds"] == 2.5
    assert json.loads(second.detail["after"])["quiet_period_seconds"] == 10
    assert json.loads(gone.detail["after"]) is None
    with session_scope(api.engine) as session:
        assert verify(session).first_break is None


def test_a_peer_may_query_and_retrieve_and_says_where_it_listens(api: Api) -> None:
    admin = api.role("admin")
    body = {"host": "10.1.2.4", "port": 104, "may_find": True, "may_get": True}
    assert httpx.put(f"{api.url}/admin/peers/PACS", json=body, headers=admin).status_code == 201
    got = httpx.get(f"{api.url}/admin/peers/PACS", headers=admin).json()
    assert (got["port"], got["may_find"], got["may_move"], got["may_get"]) == (104, True, False, True)
    with session_scope(api.engine) as session:
        peer = get_peer(session, ae_title="PACS")
    assert peer is not None and peer.may_get and not peer.may_move
    assert httpx.put(f"{api.url}/admin/peers/PACS", json={"port": 70000}, headers=admin).status_code == 422


def test_destinations_validate_per_kind_and_never_answer_secrets(api: Api) -> None:
    admin = api.role("admin")
    fhir = {
        "name": "ehr",
        "kind": "fhir",
        "options": {
            "base_url": "https://ehr.example.org/fhir",
            "auth": "basic",
            "username": "doctorai",
            "password": "pw-1",
        },
    }
    created = httpx.post(f"{api.url}/admin/destinations", json=fhir, headers=admin)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["options"]["password"] == MASK and body["options"]["username"] == "doctorai"
    assert "pw-1" not in created.text
    destination_id = body["id"]
    assert httpx.post(f"{api.url}/admin/destinations", json=fhir, headers=admin).status_code == 409

    refused = [
        {"name": "x", "kind": "dicom", "host": "h", "port": 104, "options": {}},  # no called AE title
        {"name": "x", "kind": "dicom", "host": "h", "port": 70000, "options": {"ae_title": "PACS"}},
        {"name": "x", "kind": "webhook", "options": {"url": "ftp://nope"}},
        {"name": "x", "kind": "fhir", "options": {"base_url": "https://e/fhir", "auth": "bearer"}},  # no token
        {"name": "x", "kind": "carrier-pigeon", "options": {}},
        {"name": "x", "kind": "mllp", "host": "h", "port": 2575, "options": {"surprise": "1"}},
    ]
    for candidate in refused:
        answer = httpx.post(f"{api.url}/admin/destinations", json=candidate, headers=admin)
        assert answer.status_code == 422, (candidate, answer.text)

    # A client edits what it read: the mask sent back keeps the stored password at the same address.
    read = httpx.get(f"{api.url}/admin/destinations/{destination_id}", headers=admin).json()
    edit = {"name": "ehr", "kind": "fhir", "enabled": True, "options": {**read["options"], "username": "doctorai2"}}
    assert httpx.put(f"{api.url}/admin/destinations/{destination_id}", json=edit, headers=admin).status_code == 200
    with session_scope(api.engine) as session:
        row = session.get_one(Destination, destination_id)
        assert row.options["password"] == "pw-1" and row.options["username"] == "doctorai2"
    # Moved to another address with the mask: refused, the stored password is not sent there (issue 18).
    moved = {**edit, "options": {**edit["options"], "base_url": "https://attacker.example.net/fhir"}}
    refused_move = httpx.put(f"{api.url}/admin/destinations/{destination_id}", json=moved, headers=admin)
    assert refused_move.status_code == 409 and refused_move.headers["content-type"] == "application/problem+json"
    assert "send password again" in refused_move.json()["detail"]
    with session_scope(api.engine) as session:
        assert session.get_one(Destination, destination_id).options["base_url"] == "https://ehr.example.org/fhir"
    # With the credential given again, the move is accepted.
    moved["options"]["password"] = "pw-2"
    assert httpx.put(f"{api.url}/admin/destinations/{destination_id}", json=moved, headers=admin).status_code == 200
    with session_scope(api.engine) as session:
        row = session.get_one(Destination, destination_id)
        assert row.options["password"] == "pw-2" and row.options["base_url"] == "https://attacker.example.net/fhir"

    hook = {"name": "hook", "kind": "webhook", "options": {"url": "https://hooks.example.org/x", "secret": "hmac-key"}}
    assert httpx.post(f"{api.url}/admin/destinations", json=hook, headers=admin).json()["options"]["secret"] == MASK
    disabled = httpx.post(f"{api.url}/admin/destinations/{destination_id}/disable", headers=admin).json()
    assert disabled["enabled"] is False
    listed = httpx.get(f"{api.url}/admin/destinations", headers=api.role("operator")).json()["items"]
    assert [d["name"] for d in listed] == ["ehr", "hook"]
    assert "pw-1" not in json.dumps(listed) and "hmac-key" not in json.dumps(listed)
    assert httpx.delete(f"{api.url}/admin/destinations/{destination_id}", headers=admin).status_code == 204
    assert httpx.get(f"{api.url}/admin/destinations/{destination_id}", headers=admin).status_code == 404

    records = _records(api, "admin-configuration")
    assert records and all(
        "pw-1" not in json.dumps(r.detail) and "hmac-key" not in json.dumps(r.detail) for r in records
    )
    assert records[0].detail["alert_type"] == "110128"


def test_model_activation_switches_the_active_version(api: Api) -> None:
    admin = api.role("admin")
    with session_scope(api.engine) as session:
        for version in ("1.0", "1.1"):
            add_model_package(
                session, name="pneumonia-cxr", version=version, framework="onnx", manifest='{"task": "x"}'
            )
    answer = httpx.post(f"{api.url}/admin/models/pneumonia-cxr/1.1/activate", headers=admin)
    assert answer.status_code == 200, answer.text
    assert answer.json()["active_version"] == "1.1"
    assert (
        httpx.post(f"{api.url}/admin/models/pneumonia-cxr/1.0/activate", headers=admin).json()["active_version"]
        == "1.0"
    )
    with session_scope(api.engine) as session:
        assert active_model_version(session, name="pneumonia-cxr") == "1.0"
    assert httpx.post(f"{api.url}/admin/models/pneumonia-cxr/1.1/retire", headers=admin).status_code == 200
    assert httpx.post(f"{api.url}/admin/models/pneumonia-cxr/1.1/activate", headers=admin).status_code == 409
    assert (
        httpx.post(f"{api.url}/admin/models/pneumonia-cxr/1.0/deactivate", headers=admin).json()["active_version"]
        is None
    )
    assert httpx.post(f"{api.url}/admin/models/pneumonia-cxr/9.9/activate", headers=admin).status_code == 404
    listed = httpx.get(f"{api.url}/admin/models", headers=api.role("operator")).json()["items"]
    assert [(v["version"], v["status"]) for v in listed[0]["versions"]] == [("1.0", "inactive"), ("1.1", "retired")]
    first = _records(api, "admin-configuration")[0]
    assert json.loads(first.detail["before"]) == {"versions": {"1.0": "inactive", "1.1": "inactive"}}
    assert json.loads(first.detail["after"]) == {"versions": {"1.0": "inactive", "1.1": "active"}}
    assert first.detail["alert_type"] == "110131"


def test_clients_are_created_with_a_secret_once_and_disabled(api: Api) -> None:
    admin = api.role("admin")
    created = httpx.post(
        f"{api.url}/admin/clients", json={"client_id": "ris", "name": "RIS", "scopes": ["system/*.rs"]}, headers=admin
    )
    assert created.status_code == 201, created.text
    secret = created.json()["client_secret"]
    assert secret and created.json()["auth_method"] == "client_secret_basic"
    form = {"grant_type": "client_credentials"}
    assert httpx.post(f"{api.url}/auth/token", data=form, auth=("ris", secret)).status_code == 200
    assert secret not in httpx.get(f"{api.url}/admin/clients/ris", headers=admin).text
    again = httpx.post(f"{api.url}/admin/clients", json={"client_id": "ris", "scopes": ["system/*.rs"]}, headers=admin)
    assert again.status_code == 409
    bad_scope = httpx.post(f"{api.url}/admin/clients", json={"client_id": "x", "scopes": ["everything"]}, headers=admin)
    assert bad_scope.status_code == 422
    assert httpx.post(f"{api.url}/admin/clients/ris/disable", headers=admin).json()["enabled"] is False
    assert httpx.post(f"{api.url}/auth/token", data=form, auth=("ris", secret)).status_code == 401
    records = _records(api, "admin-security")
    assert [json.loads(r.detail["after"])["enabled"] for r in records] == [True, False]
    assert all(secret not in json.dumps(r.detail) for r in records)
    assert records[0].detail["alert_type"] == "110137"


def test_a_client_is_deleted_and_its_audit_trail_stays(api: Api) -> None:
    admin = api.role("admin")
    created = httpx.post(f"{api.url}/admin/clients", json={"client_id": "old-ris", "scopes": ["system/*.rs"]}, headers=admin)
    secret = created.json()["client_secret"]
    form = {"grant_type": "client_credentials"}
    assert httpx.post(f"{api.url}/auth/token", data=form, auth=("old-ris", secret)).status_code == 200
    assert httpx.delete(f"{api.url}/admin/clients/old-ris", headers=api.role("operator")).status_code == 403
    assert httpx.delete(f"{api.url}/admin/clients/old-ris", headers=admin).status_code == 204
    assert httpx.get(f"{api.url}/admin/clients/old-ris", headers=admin).status_code == 404
    assert httpx.delete(f"{api.url}/admin/clients/old-ris", headers=admin).status_code == 404
    assert httpx.post(f"{api.url}/auth/token", data=form, auth=("old-ris", secret)).status_code == 401
    # The token it was issued and its registration are still in the trail, with the deletion.
    assert [r.agent_who for r in _records(api, "token-issued")] == ["old-ris"]
    created_record, deleted_record = _records(api, "admin-security")
    assert json.loads(created_record.detail["after"])["client_id"] == "old-ris"
    assert json.loads(deleted_record.detail["before"])["client_id"] == "old-ris"
    assert json.loads(deleted_record.detail["after"]) is None
    # Its id may be registered again, as a new client.
    again = httpx.post(f"{api.url}/admin/clients", json={"client_id": "old-ris", "scopes": ["system/*.rs"]}, headers=admin)
    assert again.status_code == 201


def test_a_dicom_destination_may_take_results_as_sr(api: Api) -> None:
    admin = api.role("admin")
    pacs = {"name": "pacs", "kind": "dicom", "host": "h", "port": 104, "options": {"ae_title": "PACS", "results": "sr"}}
    created = httpx.post(f"{api.url}/admin/destinations", json=pacs, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["options"] == {"ae_title": "PACS", "calling_ae": "DOCTORAI", "results": "sr"}
    plain = {"name": "archive", "kind": "dicom", "host": "h", "port": 104, "options": {"ae_title": "ARCHIVE"}}
    assert "results" not in httpx.post(f"{api.url}/admin/destinations", json=plain, headers=admin).json()["options"]
    seg = {**pacs, "name": "seg", "options": {"ae_title": "PACS", "results": "seg"}}
    assert httpx.post(f"{api.url}/admin/destinations", json=seg, headers=admin).status_code == 422
