"""HL7 v2 messages through the admin API: the list with its filters, and one message's unmapped
report (issue 4: every field the mapping did not use is visible), after the real intake took them."""

import contextvars
from functools import partial

import httpx
from sqlalchemy import select

from hl7_listener import commits
from hl7_listener.config import MllpSettings
from hl7_listener.intake import Answer, Received, receive
from audit.records import ADMIN_INSPECTION
from doctorai.stack import StackConfig
from storage.db import session_scope
from storage.group_commit import GroupCommit
from storage.objects import make_object_store
from storage.tables.audit import AuditEvent
from tests.fhir_api.conftest import Api
from tests.mllp_peers import sample


def test_messages_and_their_unmapped_reports(api: Api, services: StackConfig) -> None:
    objects = make_object_store(services.storage_settings())
    settings = MllpSettings(mllp_port=0, mllp_metrics_port=0)
    names = ("adt_a01_v251.hl7", "orm_o01_nw_v23.hl7", "bad_no_patient_id.hl7")
    # In a copy of the context, as the listener runs them: they set the message's correlation id.
    received = [
        contextvars.copy_context().run(receive, objects, settings, sample(name), source_address="10.0.0.9")
        for name in names
    ]
    committer: GroupCommit[Received, Answer] = GroupCommit(api.engine, partial(commits.write, settings=settings))
    answers = {name: contextvars.copy_context().run(committer.commit, message) for name, message in zip(names, received, strict=True)}
    operator = api.role("operator", subject="night-operator")

    def page(**params: object) -> dict[str, object]:
        response = httpx.get(f"{api.url}/admin/hl7/messages", params=params, headers=operator)
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body

    everything = page()
    assert everything["total"] == 3
    assert page(status="error")["items"][0]["id"] == answers["bad_no_patient_id.hl7"].message_id  # type: ignore[index]
    assert page(type="ORM^O01", sender="RIS^HOSP")["total"] == 1
    assert page(type="ADT", sender="RIS")["total"] == 0
    with_unmapped = page(unmapped="true")
    a01 = answers["adt_a01_v251.hl7"].message_id
    assert a01 in [item["id"] for item in with_unmapped["items"]]  # type: ignore[attr-defined]

    detail = httpx.get(f"{api.url}/admin/hl7/messages/{a01}", headers=operator)
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert (body["control_id"], body["message_type"], body["trigger_event"], body["status"]) == (
        "ADT0001", "ADT", "A01", "accepted"
    )
    # The Z-segment and the next of kin are not mapped to FHIR: they are listed, not dropped.
    assert body["unmapped"]["ZPI[1]-2"] == "42" and body["unmapped"]["NK1[1]-2.1"] == "Roentgen"
    assert body["unmapped_fields"] == len(body["unmapped"])
    # Reading the unmapped report discloses field values (a next of kin's name): it is audited, as
    # reading the segments is (issue 18).
    with session_scope(api.engine) as session:
        inspections = list(session.scalars(select(AuditEvent).where(AuditEvent.subtype == ADMIN_INSPECTION.subtype)))
    assert [(r.agent_who, r.detail["hl7_message"], r.detail["disclosed"]) for r in inspections] == [
        ("night-operator", a01, "unmapped fields")
    ]
    assert all("Roentgen" not in str(r.detail) for r in inspections)
    missing = httpx.get(f"{api.url}/admin/hl7/messages/nope", headers=operator)
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
