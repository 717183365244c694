"""Outbound operations through the admin API: forwards and deliveries listed and retried, destinations echoed."""

import json
import socket

import httpx
from sqlalchemy import select

from storage.db import session_scope
from storage.deliveries import queue_delivery
from storage.destinations import add_destination, destination_by_name
from storage.forwards import ForwardItem, queue_forward
from storage.tables.audit import AuditEvent
from tests.fhir_api.conftest import Api

UID = "1.2.826.0.1.3680043.8.498.75001"


def _seed(api: Api) -> tuple[int, int, int]:
    with session_scope(api.engine) as session:
        pacs = add_destination(
            session, name="pacs", kind="dicom", host="127.0.0.1", port=1, options={"ae_title": "PACS"}
        )
        ris = add_destination(session, name="ris", kind="mllp", host="127.0.0.1", port=1)
        items = [
            ForwardItem(sop_uid=f"{UID}.{n}", object_key=f"k{n}", sop_class_uid="1.2", transfer_syntax_uid="1.2")
            for n in (1, 2)
        ]
        forward = queue_forward(
            session,
            destination_id=pacs.id,
            study_uid=UID,
            revision=1,
            correlation_id="corr-f",
            rule="to-pacs",
            instances=items,
        )
        delivery = queue_delivery(
            session,
            destination_id=ris.id,
            correlation_id="corr-d",
            subject="DiagnosticReport/r/_history/1",
            control_id="1",
            payload="MSH|",
        )
        assert forward is not None and delivery is not None
        forward.status = delivery.status = "dead"
        return forward.id, delivery.id, ris.id


def test_dead_forwards_and_deliveries_are_listed_and_retried(api: Api) -> None:
    forward_id, delivery_id, _ = _seed(api)
    admin = api.role("admin")
    listed = httpx.get(f"{api.url}/admin/forwards", params={"status": "dead"}, headers=api.role("operator")).json()["items"]
    assert [(f["id"], f["study_uid"], f["instances"]["pending"]) for f in listed] == [(forward_id, UID, 2)]
    assert (listed[0]["kind"], listed[0]["job_id"]) == ("study", "")
    retried = httpx.post(f"{api.url}/admin/forwards/{forward_id}/retry", headers=admin)
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    assert httpx.post(f"{api.url}/admin/forwards/{forward_id}/retry", headers=admin).status_code == 409
    assert httpx.post(f"{api.url}/admin/forwards/999/retry", headers=admin).status_code == 404

    dead = httpx.get(f"{api.url}/admin/deliveries", params={"status": "dead"}, headers=admin).json()["items"]
    assert [d["id"] for d in dead] == [delivery_id]
    again = httpx.post(f"{api.url}/admin/deliveries/{delivery_id}/retry", headers=admin)
    assert again.status_code == 200 and again.json()["status"] == "pending"
    assert httpx.post(f"{api.url}/admin/deliveries/{delivery_id}/retry", headers=admin).status_code == 409

    with session_scope(api.engine) as session:
        records = list(session.scalars(select(AuditEvent).where(AuditEvent.subtype == "admin-operation")))
    assert [(r.detail["operation"], r.correlation_id) for r in records] == [
        ("retry-forward", "corr-f"),
        ("retry-delivery", "corr-d"),
    ]
    assert json.loads(records[0].detail["before"])["status"] == "dead"


def test_result_forwards_are_listed_by_kind(api: Api) -> None:
    forward_id, _, _ = _seed(api)
    with session_scope(api.engine) as session:
        sr = ForwardItem(
            sop_uid=f"{UID}.9",
            object_key="k9",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
            transfer_syntax_uid="1.2",
        )
        pacs = destination_by_name(session, name="pacs")
        assert pacs is not None
        result = queue_forward(
            session,
            destination_id=pacs.id,
            study_uid=UID,
            revision=1,
            correlation_id="corr-f",
            rule="",
            instances=[sr],
            job_id="job-7",
        )
        assert result is not None
        result_id = result.id
    operator = api.role("operator")
    listed = httpx.get(f"{api.url}/admin/forwards", params={"study_uid": UID}, headers=operator).json()["items"]
    assert [(f["id"], f["kind"], f["job_id"]) for f in listed] == [
        (result_id, "result", "job-7"),
        (forward_id, "study", ""),
    ]
    only = httpx.get(f"{api.url}/admin/forwards", params={"kind": "result"}, headers=operator).json()["items"]
    assert [f["id"] for f in only] == [result_id]
    assert httpx.get(f"{api.url}/admin/forwards", params={"kind": "sr"}, headers=operator).status_code == 422


def test_echo_tells_a_listening_destination_from_a_closed_port(api: Api) -> None:
    _, _, closed_id = _seed(api)
    admin = api.role("admin")
    with socket.create_server(("127.0.0.1", 0)) as server:
        with session_scope(api.engine) as session:
            port = server.getsockname()[1]
            open_id = add_destination(session, name="ris-up", kind="mllp", host="127.0.0.1", port=port).id
        up = httpx.post(f"{api.url}/admin/destinations/{open_id}/echo", headers=admin)
        assert up.status_code == 200 and up.json()["ok"] is True, up.text
    down = httpx.post(f"{api.url}/admin/destinations/{closed_id}/echo", headers=admin)
    assert down.status_code == 200 and down.json()["ok"] is False
    assert httpx.post(f"{api.url}/admin/destinations/999/echo", headers=admin).status_code == 404
