"""Auto-routing end to end with real PACSs (issue 7): Orthanc sends a study to DoctorAI with its own
C-STORE, a rule and a destination created through the admin API forward it, and other Orthancs
receive every instance with the same pixel data; a destination that is down gets the study once it
is back, without holding up the one that was up.
"""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from doctorai.stack import free_ports
from tests.conftest import EngineRun
from tests.orthanc import Modality, Orthanc, OrthancFactory, eventually
from tests.test_orthanc import held_by, one_study, pixel_data_by_sop_uid

FAST_RETRIES = {
    "DOCTORAI_RETRY_FIRST_DELAY_SECONDS": "0.5",
    "DOCTORAI_RETRY_MAX_DELAY_SECONDS": "2",
    "DOCTORAI_OUTBOUND_POLL_SECONDS": "0.2",
    "DOCTORAI_OUTBOUND_MAX_ATTEMPTS": "1000",
    "DOCTORAI_OUTBOUND_CIRCUIT_COOL_DOWN_SECONDS": "2",
}


def admin_client(run: EngineRun) -> httpx.Client:
    """The admin API with a token from `doctorai token --role admin`, as an administrator gets one."""
    doctorai = Path(sys.executable).parent / "doctorai"
    token = subprocess.run(
        [str(doctorai), "token", "--subject", "pacs-admin", "--role", "admin"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    return httpx.Client(
        base_url=f"http://127.0.0.1:{run.config.ports.http}/admin",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def add_dicom_destination(admin: httpx.Client, name: str, *, aet: str, port: int) -> int:
    body = {"name": name, "kind": "dicom", "host": "127.0.0.1", "port": port, "options": {"ae_title": aet}}
    return int(created(admin.post("/destinations", json=body))["id"])


def send_from_pacs(run: EngineRun, pacs: Orthanc, tmp_path: Path) -> dict[str, Path]:
    """Upload a four-instance study to `pacs` and have it C-STORE the study to our listener."""
    study_uid, files = one_study(tmp_path)
    for path in files.values():
        pacs.upload(path.read_bytes())
    study = pacs.lookup(study_uid)
    assert study is not None
    answer = pacs.store("doctorai", [study])
    assert answer.instances_count == len(files) and answer.failed_instances_count == 0
    return files


def assert_holds_the_study(orthanc: Orthanc, files: dict[str, Path]) -> None:
    """Every instance is there, sent by DOCTORAI, with the source file's pixel data byte for byte."""
    pixels = pixel_data_by_sop_uid()
    for sop_uid in files:
        ds = held_by(orthanc, sop_uid)
        assert ds.PixelData == pixels[sop_uid], sop_uid
        instance = orthanc.find_instance(sop_uid)
        assert instance is not None and orthanc.calling_aet(instance) == "DOCTORAI"


def forwards(admin: httpx.Client, destination_id: int) -> list[dict[str, Any]]:
    response = admin.get("/forwards", params={"destination_id": destination_id})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["items"]
    return rows


@pytest.mark.stack
def test_orthanc_study_is_routed_to_a_second_orthanc(
    engine_run: EngineRun, orthanc_factory: OrthancFactory, tmp_path: Path
) -> None:
    engine_run.start(models=())
    reading = orthanc_factory(aet="READING")
    pacs = orthanc_factory(aet="MODALITY", modalities={"doctorai": Modality("DOCTORAI", engine_run.config.ports.dicom)})
    with admin_client(engine_run) as admin:
        destination = add_dicom_destination(admin, "reading-pacs", aet="READING", port=reading.dicom_port)
        echo = admin.post(f"/destinations/{destination}/echo")
        assert echo.status_code == 200 and echo.json()["ok"] is True, echo.text
        rule = {"name": "modality-to-reading", "match": {"calling_aes": ["MODALITY"]}, "forward": ["reading-pacs"]}
        created(admin.post("/rules", json=rule))

        files = send_from_pacs(engine_run, pacs, tmp_path)
        reading.wait_for_instances(len(files), timeout=120)
        assert_holds_the_study(reading, files)
        done = eventually(
            lambda: [f for f in forwards(admin, destination) if f["status"] == "sent"] or None,
            timeout=30,
            what="the forward marked sent",
        )
        assert len(done) == 1 and done[0]["rule"] == "modality-to-reading"


@pytest.mark.stack
def test_a_destination_that_is_down_gets_the_study_when_back_and_delays_no_other(
    engine_run: EngineRun, orthanc_factory: OrthancFactory, tmp_path: Path
) -> None:
    engine_run.config = replace(engine_run.config, extra_env=FAST_RETRIES)
    engine_run.start(models=())
    up = orthanc_factory(aet="UPPACS")
    down_port = free_ports().dicom  # nothing listens there until the second Orthanc starts
    pacs = orthanc_factory(aet="MODALITY", modalities={"doctorai": Modality("DOCTORAI", engine_run.config.ports.dicom)})
    with admin_client(engine_run) as admin:
        add_dicom_destination(admin, "up-pacs", aet="UPPACS", port=up.dicom_port)
        down = add_dicom_destination(admin, "down-pacs", aet="DOWNPACS", port=down_port)
        echo = admin.post(f"/destinations/{down}/echo")
        assert echo.status_code == 200 and echo.json()["ok"] is False, echo.text
        rule = {"name": "everything-twice", "match": {}, "forward": ["down-pacs", "up-pacs"]}
        created(admin.post("/rules", json=rule))

        files = send_from_pacs(engine_run, pacs, tmp_path)
        up.wait_for_instances(len(files), timeout=120)
        assert_holds_the_study(up, files)
        # The down destination has tried and is waiting to try again, while the other got the study.
        retrying = eventually(
            lambda: [f for f in forwards(admin, down) if f["status"] == "pending" and f["attempts"] >= 1] or None,
            timeout=60,
            what="a failed attempt to the down destination",
        )
        assert "connect" in retrying[0]["last_error"]

        back = orthanc_factory(aet="DOWNPACS", dicom_port=down_port)
        back.wait_for_instances(len(files), timeout=120)
        assert_holds_the_study(back, files)
        eventually(
            lambda: [f for f in forwards(admin, down) if f["status"] == "sent"] or None,
            timeout=30,
            what="the late forward marked sent",
        )
