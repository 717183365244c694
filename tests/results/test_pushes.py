"""Reports out to FHIR servers and webhooks: queued with the report, sent by the outbound sender over real HTTP."""

import json
from collections.abc import Callable
from functools import partial

from sqlalchemy import Engine, select

from storage import fhir
from results import consumer
from storage.fhir.systems import JOB_SYSTEM
from results.pushes import OBSERVATION_SYSTEM
from integration.config import Hl7Identity
from integration.messages import InferenceResult
from integration.outbound import http
from integration.outbound.http import SIGNATURE_HEADER, signature
from storage.db import session_scope
from storage.deliveries import deliveries
from storage.destinations import add_destination
from storage.instances import ReceivedInstance
from storage.tables.audit import AuditEvent
from storage.tables.outbound import Delivery, Destination
from tests.http_peers import http_endpoint
from tests.mllp_peers import wait_for
from tests.senders import FAST, sending

EXPORTS = consumer.Exports(identity=Hl7Identity(), fhir_base_url="/fhir")

MakeJob = Callable[..., InferenceResult]


def test_a_report_becomes_one_transaction_bundle_and_one_event(
    engine: Engine, indexed: ReceivedInstance, make_job: MakeJob
) -> None:
    with session_scope(engine) as session:
        add_destination(session, name="ehr", kind="fhir", host="", port=0, options={"base_url": "http://ehr/fhir"})
        add_destination(session, name="hook", kind="webhook", host="", port=0, options={"url": "http://hook/x"})
        add_destination(session, name="mllp", kind="mllp", host="127.0.0.1", port=1)
    result = make_job()
    with session_scope(engine) as session:
        report_id = consumer.apply_result(session, result, EXPORTS)
    with session_scope(engine) as session:
        assert consumer.apply_result(session, result, EXPORTS) is None  # a replay queues nothing new
        queued = {session.get_one(Destination, d.destination_id).kind: d for d in deliveries(session)}
    assert set(queued) == {"fhir", "webhook", "mllp"}
    bundle = fhir.parse_bundle(json.loads(queued["fhir"].payload))
    assert bundle.type == "transaction"
    *observations, report = bundle.entry or []
    assert observations and report.request.method == "POST" and report.request.url == "DiagnosticReport"
    assert report.request.ifNoneExist == f"identifier={JOB_SYSTEM}|{result.job_id}"
    assert report.resource.id is None
    # The report points at the bundle's Observations; the receiver rewrites them to its own ids.
    assert [r.reference for r in report.resource.result] == [o.fullUrl for o in observations]
    assert report.resource.subject.identifier.value == indexed.patient_id
    assert report.resource.imagingStudy[0].identifier.value == f"urn:oid:{indexed.study_uid}"
    for entry in observations:
        value = next(i.value for i in entry.resource.identifier if i.system == OBSERVATION_SYSTEM)
        assert entry.request.ifNoneExist == f"identifier={OBSERVATION_SYSTEM}|{value}"
    event = json.loads(queued["webhook"].payload)
    assert (event["report_id"], event["study_uid"], event["model"]) == (report_id, indexed.study_uid, result.model)
    assert event["links"]["report"].endswith(f"/fhir/DiagnosticReport/{report_id}")
    assert event["conclusion"]


def _status(engine: Engine) -> dict[str, tuple[str, int]]:
    with session_scope(engine) as session:
        rows = session.execute(select(Destination.name, Delivery.status, Delivery.attempts).join(Delivery))
        return {name: (status, attempts) for name, status, attempts in rows}


def test_fhir_and_webhook_deliveries_retry_or_die_by_the_http_status(
    engine: Engine, indexed: ReceivedInstance, make_job: MakeJob
) -> None:
    answers = [503, 200]

    def unavailable_once(method: str, path: str, body: bytes) -> tuple[int, dict[str, object]]:
        return answers.pop(0), {"resourceType": "Bundle", "type": "transaction-response"}

    with (
        http_endpoint(unavailable_once) as ehr,
        http_endpoint(lambda *_: (400, {"resourceType": "OperationOutcome"})) as strict,
        http_endpoint(lambda *_: (204, {})) as hook,
    ):
        with session_scope(engine) as session:
            add_destination(
                session,
                name="ehr",
                kind="fhir",
                host="",
                port=0,
                options={"base_url": f"{ehr.url}/fhir", "auth": "basic", "username": "u", "password": "p"},
            )
            add_destination(session, name="strict", kind="fhir", host="", port=0, options={"base_url": strict.url})
            add_destination(
                session,
                name="hook",
                kind="webhook",
                host="",
                port=0,
                options={"url": f"{hook.url}/events", "secret": "s3"},
            )
        with session_scope(engine) as session:
            consumer.apply_result(session, make_job(), EXPORTS)

        def finished() -> bool:
            return all(s in ("sent", "dead") for s, _ in _status(engine).values())

        pushes = http.transport(FAST)
        until = partial(wait_for, finished, timeout=60, what="every delivery finished")
        sending(engine, FAST, {"fhir": pushes, "webhook": pushes}, until)
    assert _status(engine) == {"ehr": ("sent", 2), "strict": ("dead", 1), "hook": ("sent", 1)}
    first, second = ehr.requests
    assert first.body == second.body and second.path == "/fhir"  # the same transaction again
    assert second.headers["Authorization"].startswith("Basic ")
    assert fhir.parse_bundle(json.loads(second.body)).type == "transaction"
    (event,) = hook.requests
    assert event.headers[SIGNATURE_HEADER] == signature("s3", event.body)
    with session_scope(engine) as session:
        audited = {
            (a.detail["destination"], a.outcome)
            for a in session.scalars(select(AuditEvent).where(AuditEvent.subtype == "report-sent"))
        }
    assert audited == {("ehr", "4"), ("ehr", "0"), ("strict", "8"), ("hook", "0")}
