"""End to end on the real local stack: C-STORE in (dcmtk storescu), FHIR DiagnosticReport out.

One correlation id ties the audit trail together from the association to the report read.
"""

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.data import get_testdata_file
from sqlalchemy import func, select

from audit.log import trail
from storage.db import make_engine, session_scope
from storage.objects import make_object_store
from storage.instances import correlation_id_for_study
from storage.tables.pipeline import InferenceJob, Report
from tests.conftest import EngineRun

RG1 = Path(str(get_testdata_file("RG1_UNCR.dcm")))
RG1_DS = pydicom.dcmread(RG1, stop_before_pixels=True)
PATIENT_ID = str(RG1_DS.PatientID)
STUDY_UID = str(RG1_DS.StudyInstanceUID)


def storescu(run: EngineRun, *files: Path) -> None:
    """Send files with dcmtk, as a PACS would; fail the test on any non-success status."""
    result = subprocess.run(
        ["storescu", "-aec", "DOCTORAI", "-aet", "TESTPACS", "127.0.0.1", str(run.config.ports.dicom), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def cli_token() -> str:
    """A token from the `doctorai token` command, as the README tells an EHR integrator."""
    doctorai = Path(sys.executable).parent / "doctorai"
    out = subprocess.run([str(doctorai), "token", "--scope", "system/*.rs"], capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def wait_for_reports(run: EngineRun, token: str, *, at_least: int = 1, timeout: float = 180) -> dict[str, Any]:
    """Poll the FHIR search an EHR would make until the report is there."""
    url = f"http://127.0.0.1:{run.config.ports.http}/fhir/DiagnosticReport"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(url, params={"patient": PATIENT_ID}, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        bundle: dict[str, Any] = response.json()
        if bundle.get("total", 0) >= at_least:
            return bundle
        dead = run.supervisor.dead()
        assert not dead, f"engine process died: {[c.name for c in dead]}\n{run.logs()}"
        time.sleep(0.25)
    pytest.fail(f"no DiagnosticReport after {timeout}s\n{run.logs()}")


def count_reports(run: EngineRun) -> int:
    engine = make_engine(run.config.storage_settings().resolved_database_url())
    try:
        with session_scope(engine) as session:
            return session.scalar(select(func.count()).select_from(Report)) or 0
    finally:
        engine.dispose()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample on a process's /metrics, by name and labels."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def metrics_ports(run: EngineRun) -> dict[str, int]:
    """The metrics (and health) port of every background process."""
    p = run.config.ports
    return {
        "dicom": p.dicom_metrics,
        "integration": p.integration_metrics,
        "results": p.results_metrics,
        "inference": p.inference_metrics,  # the first model's worker
        "subscriptions": p.subscriptions_metrics,
        "mllp": p.mllp_metrics,
    }


def assert_moved_exactly(run: EngineRun, before: dict[str, Samples], expected: dict[tuple[str, str, frozenset[tuple[str, str]]], float]) -> None:
    """Poll until each (process, sample, labels) moved by its expected amount, then require exactly that."""

    def moved() -> dict[tuple[str, str, frozenset[tuple[str, str]]], float]:
        now = {process: scrape(port) for process, port in metrics_ports(run).items()}
        return {
            (process, name, labels): now[process].get((name, labels), 0.0) - before[process].get((name, labels), 0.0)
            for process, name, labels in expected
        }

    deadline = time.monotonic() + 30
    while (found := moved()) != expected and time.monotonic() < deadline:
        # A counter is bumped just after the commit that makes the report searchable.
        assert all(found[k] <= v for k, v in expected.items()), found
        time.sleep(0.2)
    assert found == expected


# Values no log line may contain (DESIGN.md 8: logs carry identifiers, never PHI).
PHI_MARKERS = {"PatientName": "Zzmarkerfamily^Zzmarkergiven", "PatientBirthDate": "19010203",
               "StudyDescription": "ZZFREETEXTMARKER", "ReferringPhysicianName": "Zzmarkerdoctor"}


def with_phi_markers(tmp_path: Path) -> Path:
    """RG1_UNCR.dcm with marker values in its PHI and free-text elements (UIDs and PatientID kept)."""
    ds = pydicom.dcmread(RG1)
    for keyword, value in PHI_MARKERS.items():
        setattr(ds, keyword, value)
    path = tmp_path / "rg1-markers.dcm"
    ds.save_as(path)
    return path


@pytest.mark.stack
def test_cstore_to_diagnostic_report(engine_run: EngineRun, tmp_path: Path) -> None:
    """A real CR chest radiograph in by C-STORE comes out as a searchable FHIR DiagnosticReport."""
    engine_run.start()
    token = cli_token()
    # Issue 9: every background process answers its health probes and serves /metrics.
    for process, port in metrics_ports(engine_run).items():
        for probe in ("healthz", "readyz"):
            answer = httpx.get(f"http://127.0.0.1:{port}/{probe}")
            assert answer.status_code == 200, (process, probe, answer.text)
    before = {process: scrape(port) for process, port in metrics_ports(engine_run).items()}
    storescu(engine_run, with_phi_markers(tmp_path))
    sent = time.monotonic()

    bundle = wait_for_reports(engine_run, token)
    latency = time.monotonic() - sent
    print(f"\nlast C-STORE -> report searchable: {latency:.2f}s (quiet period 1s)")

    # The counters and the end-to-end latency histogram moved by exactly the one study sent.
    model = frozenset({("model", engine_run.config.models[0])})
    stages = {
        ("results", "doctorai_e2e_latency_seconds_count", model | {("stage", stage)}): 1.0
        for stage in ("quiet-period", "queue", "inference", "report", "total")
    }
    assert_moved_exactly(
        engine_run,
        before,
        {
            ("dicom", "doctorai_dicom_instances_received_total", frozenset({("status", "success")})): 1.0,
            ("dicom", "doctorai_dicom_studies_ready_total", frozenset({("reason", "quiet-period")})): 1.0,
            ("inference", "doctorai_inference_jobs_total", model | {("outcome", "done")}): 1.0,
            ("results", "doctorai_fhir_reports_created_total", frozenset()): 1.0,
            **stages,
        },
    )

    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset" and bundle["total"] == 1
    report = bundle["entry"][0]["resource"]
    assert report["resourceType"] == "DiagnosticReport"
    assert report["status"] == "preliminary"
    assert report["subject"]["reference"] == f"Patient/{PATIENT_ID}"
    assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{STUDY_UID}"}]
    assert report["conclusion"].startswith("NOT FOR CLINICAL USE")
    # The study's date (RG1's StudyDate), not the day the model ran; `issued` is when the report was made.
    assert report["effectiveDateTime"] == "2004-08-26" and report["issued"][:10] > "2004-08-26"

    api = f"http://127.0.0.1:{engine_run.config.ports.http}/fhir"
    headers = {"Authorization": f"Bearer {token}"}
    # The probability Observation and the ImagingStudy, by _include as an EHR would ask.
    included = httpx.get(
        f"{api}/DiagnosticReport",
        params=[("_id", report["id"]), ("_include", "DiagnosticReport:result"), ("_include", "DiagnosticReport:imaging-study")],
        headers=headers,
    ).json()
    by_type = {e["resource"]["resourceType"]: e for e in included["entry"]}
    observation = by_type["Observation"]["resource"]
    assert by_type["Observation"]["search"]["mode"] == "include"
    assert observation["code"]["coding"][0] == {
        "system": "http://snomed.info/sct",
        "code": "233604007",
        "display": "Pneumonia (disorder)",
    }
    assert 0.0 <= observation["valueQuantity"]["value"] <= 1.0
    study = by_type["ImagingStudy"]["resource"]
    assert study["id"] == STUDY_UID
    assert study["series"][0]["modality"]["code"] == "CR"
    assert study["series"][0]["instance"][0]["uid"] == str(RG1_DS.SOPInstanceUID)

    read = httpx.get(f"{api}/DiagnosticReport/{report['id']}", headers=headers)
    assert read.status_code == 200 and read.json()["id"] == report["id"]

    # The bytes are in object storage with the pixel data as sent.
    store = make_object_store(engine_run.config.storage_settings())
    key = f"dicom/{STUDY_UID}/{RG1_DS.SeriesInstanceUID}/{RG1_DS.SOPInstanceUID}.dcm"
    from io import BytesIO

    stored = pydicom.dcmread(BytesIO(store.get_bytes(key)))
    assert stored.PixelData == pydicom.dcmread(RG1).PixelData
    assert stored.PatientName == PHI_MARKERS["PatientName"]  # the archive keeps what was sent

    # One audit trail from association to report read, under the study's correlation id.
    engine = make_engine(engine_run.config.storage_settings().resolved_database_url())
    with session_scope(engine) as session:
        records = trail(session, correlation_id=correlation_id_for_study(STUDY_UID))
        subtypes = [r.subtype for r in records]
    engine.dispose()
    expected = [
        "association-accepted",
        "instance-stored",
        "study-ready",
        "study-routed",
        "inference-run",
        "report-created",
        "resource-searched",
        "resource-read",
    ]
    positions = [subtypes.index(s) for s in expected]
    assert positions == sorted(positions), subtypes
    assert next(r for r in records if r.subtype == "association-accepted").agent_who == "ae:TESTPACS"

    # No engine log line holds the patient's name, birth date or free text.
    logs = engine_run.logs(tail=None)
    markers = {"Zzmarkerfamily", "Zzmarkergiven", "19010203", "ZZFREETEXTMARKER", "Zzmarkerdoctor"}
    assert logs.strip() and not [m for m in markers if m.lower() in logs.lower()]


@pytest.mark.stack
def test_restart_mid_way_and_resend_yield_one_report(engine_run: EngineRun) -> None:
    """Killed after C-STORE success and routing but before the report, the engine finishes after a restart;
    sending the same study again changes nothing."""
    engine_run.start(models=())  # no inference worker yet: the request waits on Kafka
    storescu(engine_run, RG1)
    engine = make_engine(engine_run.config.storage_settings().resolved_database_url())
    deadline = time.monotonic() + 60
    while True:
        with session_scope(engine) as session:
            if session.scalar(select(func.count()).select_from(InferenceJob)):
                break
        assert time.monotonic() < deadline, engine_run.logs()
        time.sleep(0.2)
    engine_run.kill_all()
    assert count_reports(engine_run) == 0

    engine_run.start()
    token = cli_token()
    bundle = wait_for_reports(engine_run, token)
    assert bundle["total"] == 1

    storescu(engine_run, RG1)  # the same study, byte for byte
    # Wait past the quiet period and a router pass; a new revision would show as a second job.
    time.sleep(3 * engine_run.config.quiet_period_seconds + 2)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(InferenceJob)) == 1
    engine.dispose()
    assert count_reports(engine_run) == 1
    assert wait_for_reports(engine_run, token)["total"] == 1


@pytest.mark.stack
def test_late_instance_opens_a_revision_whose_report_amends_the_first(engine_run: EngineRun, tmp_path: Path) -> None:
    """Instances arriving after the study was ready make revision 2; its report amends the first
    report in place (one current DiagnosticReport, status amended, version 2), not a second one."""
    engine_run.start()
    token = cli_token()
    storescu(engine_run, RG1)
    first = wait_for_reports(engine_run, token)["entry"][0]["resource"]
    assert first["status"] == "preliminary"

    late = pydicom.dcmread(RG1)
    late.SOPInstanceUID = late.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    late.InstanceNumber = 2
    late_path = tmp_path / "late.dcm"
    late.save_as(late_path, enforce_file_format=True)
    storescu(engine_run, late_path)

    api = f"http://127.0.0.1:{engine_run.config.ports.http}/fhir"
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 180
    while True:
        bundle = httpx.get(f"{api}/DiagnosticReport", params={"patient": PATIENT_ID}, headers=headers).json()
        report = bundle["entry"][0]["resource"]
        if report["status"] == "amended" or time.monotonic() > deadline:
            break
        assert not engine_run.supervisor.dead(), engine_run.logs()
        time.sleep(0.25)
    assert report["status"] == "amended", engine_run.logs()
    assert bundle["total"] == 1 and report["id"] == first["id"] and report["meta"]["versionId"] == "2"

    engine = make_engine(engine_run.config.storage_settings().resolved_database_url())
    with session_scope(engine) as session:
        rows = list(session.scalars(select(Report).order_by(Report.revision)))
        assert [(r.revision, r.diagnostic_report_id) for r in rows] == [(1, first["id"]), (2, first["id"])]
        subtypes = [r.subtype for r in trail(session, correlation_id=correlation_id_for_study(STUDY_UID))]
    engine.dispose()
    assert subtypes.count("study-ready") == 2
    assert subtypes.index("report-created") < subtypes.index("report-amended")
