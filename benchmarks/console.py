"""The console's pages with 10,000 studies stored: how long each page's admin API calls take.

Fills a database with N studies (default 10,000) spread over 30 days, a tenth of them in the
last three hours, each with its series, two instances, a job and mostly a report, four audit
records, an HL7 message and a delivery; plus forwards, dead letters and process heartbeats. Then
serves the API with uvicorn in its own process, signs in as a person (the session cookie, as the
console does: the gate's session check is in every timing) and times every admin API call each
console page makes, sequentially, REPEATS times: the median and p95 per call and the sum of the
medians per page (the browser makes a page's calls in parallel, so that sum is the worst case).
The target is every page under 300 ms.

    .venv/bin/python benchmarks/console.py                      # 10,000 studies, SQLite
    .venv/bin/python benchmarks/console.py --database-url postgresql+psycopg://postgres@127.0.0.1/test
"""

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audit.log import append_many  # noqa: E402
from audit.records import INSTANCE_STORED, RESOURCE_READ, STUDY_READY, STUDY_ROUTED, AuditRecord  # noqa: E402
from benchmarks.fhir_search import _free_port, _start, _wait  # noqa: E402
from fhir_api.auth.users import hash_password  # noqa: E402
from fhir_api.config import ApiSettings  # noqa: E402
from storage.db import make_engine, migrate, session_scope  # noqa: E402
from storage.tables.access import User  # noqa: E402
from storage.tables.hl7 import Hl7Message  # noqa: E402
from storage.tables.index import Instance, InstanceVersion, Series, Study  # noqa: E402
from storage.tables.outbound import Delivery, Destination, Forward  # noqa: E402
from storage.tables.pipeline import DeadLetter, InferenceJob, ModelPackage, Report  # noqa: E402
from storage.tables.processes import ProcessHeartbeat  # noqa: E402

SETTINGS = ApiSettings(
    jwt_secret="benchmark-secret-0123456789abcdef0123", rate_limit_per_second=1e9, rate_limit_burst=10**9
)
PASSWORD = "benchmark passphrase"
NOW = datetime.now(UTC)
MODALITIES = ["CR", "CT", "MR", "DX", "US"]
AES = ["CT_ROOM1", "MR_ROOM2", "PACS", "DX_ED"]


def _when(i: int, rng: random.Random) -> datetime:
    # A tenth in the last three hours (the overview's window), the rest over 30 days.
    if i % 10 == 0:
        return NOW - timedelta(seconds=rng.randrange(0, 3 * 3600))
    return NOW - timedelta(seconds=rng.randrange(3 * 3600, 30 * 86400))


def _study_rows(i: int, rng: random.Random, rows: dict[Any, list[dict[str, Any]]]) -> list[AuditRecord]:
    """The rows of study i (its series, instances, job, report, HL7 message, delivery, forward) and its audit records."""
    uid = f"1.2.826.0.1.3680043.8.498.{i + 1}"
    at = _when(i, rng)
    cid = str(uuid.uuid5(uuid.NAMESPACE_OID, uid))
    ae = AES[i % 4]
    rows[Study].append(
        dict(study_uid=uid, correlation_id=cid, patient_id=f"P{i % 3000}", accession_number=f"A{i}",
             study_date=(at - timedelta(days=1)).strftime("%Y%m%d"), study_description="CHEST", calling_ae=ae,
             called_ae="DOCTORAI", source_address="10.0.0.9", status="ready", revision=1, ready_reason="quiet-period",
             first_received_at=at, last_received_at=at, ready_at=at + timedelta(seconds=10))
    )
    rows[Series].append(
        dict(series_uid=f"{uid}.1", study_uid=uid, modality=MODALITIES[i % 5], body_part="CHEST", series_number=1,
             series_description="")
    )
    for k in (1, 2):
        common = dict(sop_uid=f"{uid}.1.{k}", study_uid=uid, object_key=f"dicom/{uid}/{k}.dcm", size=1000,
                      sha256="a" * 64, received_at=at)
        rows[Instance].append({**common, "series_uid": f"{uid}.1", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.1",
                               "transfer_syntax_uid": "1.2.840.10008.1.2.1", "instance_number": k})
        rows[InstanceVersion].append({**common, "version": 1, "calling_ae": ae})
    job, failed = str(uuid.uuid4()), i % 20 == 0
    rows[InferenceJob].append(
        dict(job_id=job, study_uid=uid, revision=1, model="chest-xray-pneumonia", model_version="0.3.0",
             status="failed" if failed else "done", error="boom" if failed else "",
             created_at=at + timedelta(seconds=11), finished_at=at + timedelta(seconds=20), crashes=0)
    )
    if not failed:
        rows[Report].append(
            dict(job_id=job, study_uid=uid, revision=1, diagnostic_report_id=job, created_at=at + timedelta(seconds=21),
                 positive=rng.random() < 0.3, study_received_at=at)
        )
    rows[Hl7Message].append(
        dict(id=str(uuid.uuid4()), correlation_id=cid, sender_application="EHR", sender_facility="HOSP",
             source_address="10.0.0.5", control_id=f"C{i}", message_type="ORM", trigger_event="O01", version="2.5.1",
             received_at=at - timedelta(minutes=5), object_key="", size=500, status="accepted", ack_code="AA", error="",
             unmapped={"ZDS[1]-1": "x"} if i % 7 == 0 else {}, dedupe_key=f"EHR|HOSP|C{i}")
    )
    status = "dead" if i % 97 == 0 else "pending" if i % 53 == 0 else "sent"
    rows[Delivery].append(
        dict(destination_id=1 + i % 2, correlation_id=cid, subject=f"DiagnosticReport/{job}/_history/1",
             control_id=str(i), payload="MSH|", status=status, attempts=1, next_attempt_at=at, last_error="",
             ack_code="AA", created_at=at + timedelta(seconds=22), finished_at=at + timedelta(seconds=23))
    )
    if i % 5 == 0:
        rows[Forward].append(
            dict(destination_id=3, study_uid=uid, revision=1, correlation_id=cid, rule="forward-ct", kind="study",
                 job_id="", status="sent", attempts=1, next_attempt_at=at, last_error="", created_at=at,
                 finished_at=at + timedelta(seconds=5))
        )
    hops = ((INSTANCE_STORED, f"ae:{ae}"), (STUDY_READY, "ae:DOCTORAI"), (STUDY_ROUTED, "doctorai-router"),
            (RESOURCE_READ, "epic"))
    return [AuditRecord(hop=hop, correlation_id=cid, agent_who=who, entity_what=uid, detail={"study_uid": uid})
            for hop, who in hops]


def _configuration(session: Session) -> None:
    """Destinations, the model, dead letters, process heartbeats and two people (an admin, an auditor)."""
    for n, (name, kind, port) in enumerate((("ehr", "mllp", 2575), ("ris", "mllp", 2575), ("archive", "dicom", 104))):
        session.add(Destination(id=n + 1, name=name, kind=kind, host=f"10.0.0.{20 + n}", port=port, tls=False,
                                enabled=True, options={}, created_at=NOW))
    session.add(ModelPackage(name="chest-xray-pneumonia", version="0.3.0", framework="keras", manifest="{}",
                             status="active", uploaded_at=NOW, activated_at=NOW))
    session.execute(insert(DeadLetter), [
        dict(event_id=str(uuid.uuid4()), source_topic="study.ready", key=f"k{i}", payload="{}", error="ValidationError",
             correlation_id="c", created_at=NOW - timedelta(hours=i), status="open" if i % 3 else "replayed",
             resolved_at=None, resolved_by="", reason="")
        for i in range(200)
    ])
    for name, kind in (("api", "api"), ("integration", "integration"), ("results", "results"),
                       ("dicom-listener", "dicom"), ("hl7-listener", "hl7"), ("subscriptions", "subscriptions"),
                       ("inference-chest-xray-pneumonia", "inference")):
        session.add(ProcessHeartbeat(name=name, host="bench", pid=1, kind=kind, version="0.1.0", started_at=NOW,
                                     last_seen_at=NOW, detail={}))
    for name, role in (("ada", "admin"), ("alma", "auditor")):
        session.add(User(name=name, role=role, password_hash=hash_password(PASSWORD), failed_attempts=0,
                         disabled=False, created_at=NOW))


def fill(engine: Engine, n: int) -> str:
    """N studies and everything around them; returns one study's UID to open."""
    rng = random.Random(16)
    tables = (Study, Series, Instance, InstanceVersion, InferenceJob, Report, Hl7Message, Delivery, Forward)
    rows: dict[Any, list[dict[str, Any]]] = {t: [] for t in tables}
    records = [record for i in range(n) for record in _study_rows(i, rng, rows)]
    with session_scope(engine) as session:
        _configuration(session)
        session.flush()
        for table, batch in rows.items():
            for start in range(0, len(batch), 5000):
                session.execute(insert(table), batch[start : start + 5000])
    for start in range(0, len(records), 5000):
        with session_scope(engine) as session:
            append_many(session, records[start : start + 5000])
    return f"1.2.826.0.1.3680043.8.498.{n // 2 + 1}"


def _serve(url: str, port: int) -> None:
    import uvicorn

    from fhir_api.app import create_app
    from storage.config import StorageSettings

    storage = StorageSettings(database_url=url, s3_endpoint="127.0.0.1:1")
    uvicorn.run(create_app(SETTINGS, storage), host="127.0.0.1", port=port, log_config=None, access_log=False)


def pages(uid: str) -> dict[str, list[tuple[str, str]]]:
    """Each console page and the admin API calls it makes (with who makes them)."""
    cid = str(uuid.uuid5(uuid.NAMESPACE_OID, uid))
    return {
        "overview": [("ada", "/admin/overview?hours=3")],
        "studies": [("ada", "/admin/studies?limit=25")],
        "studies, searched": [("ada", "/admin/studies?limit=25&modality=CT&source_ae=CT_ROOM1&sort=-study_date")],
        "study": [
            ("ada", f"/admin/studies/{uid}"),
            ("ada", f"/admin/studies/{uid}/reports"),
            ("ada", f"/admin/forwards?study_uid={uid}&limit=100"),
            ("ada", f"/admin/deliveries?correlation_id={cid}&limit=100"),
            ("ada", f"/admin/studies/{uid}/timeline?limit=50"),
        ],
        "rules": [("ada", "/admin/rules?limit=25"), ("ada", "/admin/rules/warnings")],
        "destinations": [("ada", "/admin/destinations?limit=25"), ("ada", "/admin/peers?limit=25")],
        "models": [("ada", "/admin/models?limit=25"), ("ada", "/admin/rules/warnings")],
        "model": [
            ("ada", "/admin/models/chest-xray-pneumonia"),
            ("ada", "/admin/models/chest-xray-pneumonia/figures?days=30"),
        ],
        "dead letters": [("ada", "/admin/dead-letters?status=open&limit=25")],
        "hl7 messages": [("ada", "/admin/hl7/messages?limit=25")],
        "hl7 messages, unmapped only": [("ada", "/admin/hl7/messages?limit=25&unmapped=true")],
        "audit": [("alma", "/admin/audit?limit=50")],
        "audit, by agent": [("alma", "/admin/audit?limit=50&agent=epic")],
        "people": [("ada", "/admin/users?limit=25"), ("ada", "/admin/clients?limit=25")],
    }


def main() -> None:
    """Fill, serve, sign in, time."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp(prefix='console-bench-')) / 'doctorai.db'}"
    migrate(url)
    engine = make_engine(url)
    started = time.perf_counter()
    uid = fill(engine, args.studies)
    engine.dispose()
    print(f"stored {args.studies} studies and their rows in {time.perf_counter() - started:.0f} s ({url.split(':')[0]})")
    port = _free_port()
    server = _start(_serve, url, port)
    base = f"http://127.0.0.1:{port}"
    _wait(f"{base}/healthz")
    clients = {}
    for name in ("ada", "alma"):
        client = httpx.Client(base_url=base, timeout=30)
        client.post("/console/session", json={"name": name, "password": PASSWORD}).raise_for_status()
        clients[name] = client
    print(f"{'page':30} {'call':72} {'p50 ms':>8} {'p95 ms':>8}")
    worst = 0.0
    for page, calls in pages(uid).items():
        total = 0.0
        for who, path in calls:
            clients[who].get(path).raise_for_status()  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                clients[who].get(path).raise_for_status()
                times.append((time.perf_counter() - t0) * 1000)
            p50, p95 = statistics.median(times), statistics.quantiles(times, n=20)[18]
            total += p50
            print(f"{page:30} {path[:72]:72} {p50:8.1f} {p95:8.1f}")
        worst = max(worst, total)
        print(f"{page:30} {'(page: sum of the medians)':72} {total:8.1f}")
    for client in clients.values():
        client.close()
    server.terminate()
    print(f"slowest page: {worst:.0f} ms (target: under 300 ms)")


if __name__ == "__main__":
    main()
