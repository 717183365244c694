"""End to end: CT and MR instances (pydicom's test files) by C-STORE -> TotalSegmentator's XGBoost
classifiers in a worker -> a DiagnosticReport whose contradiction Observation flags only the CT
whose Modality attribute was changed to MR."""

import re
import socket
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from doctorai.stack import engine_env, http_ok
from tests.conftest import EngineRun
from tests.inference.packages.fhir_client import FhirClient
from tests.test_pipeline import storescu

CONTRADICTED = "modality-contradicted"


def _by_code(observations: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["code"]["coding"][0]["code"]: o for o in observations}


def _assigned(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r'^doctorai_inference_assigned_partitions\{model="modality-check"\} (\S+)$', text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def _second_worker(run: EngineRun) -> int:
    """Start a second worker of the model (another member of its consumer group); its metrics port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**engine_env(run.config), "DOCTORAI_INFERENCE_METRICS_PORT": str(port)}
    run.supervisor.start(
        "inference-modality-check-2",
        [sys.executable, "-m", "inference", "--model", "modality-check"],
        env=env,
        ready=lambda: http_ok(f"http://127.0.0.1:{port}/metrics"),
        timeout=180,
    )
    return port


@pytest.mark.stack
def test_a_series_whose_pixels_contradict_its_modality_is_flagged(engine_run: EngineRun, tmp_path: Path) -> None:
    """Two workers share the request topic's partitions; the contradicted study is flagged, the others not."""
    ct, mr = (Path(str(get_testdata_file(n))) for n in ("CT_small.dcm", "MR_small.dcm"))
    # CT pixels (in HU after the rescale) labelled MR, in a study of their own.
    relabelled = pydicom.dcmread(ct)
    relabelled.Modality, relabelled.PatientID = "MR", "RELABELLED"
    relabelled.StudyInstanceUID, relabelled.SeriesInstanceUID = generate_uid(), generate_uid()
    relabelled.SOPInstanceUID = relabelled.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    relabelled.save_as(tmp_path / "relabelled.dcm")

    engine_run.start(models=("modality-check",))
    ports = [engine_run.config.ports.inference_metrics, _second_worker(engine_run)]
    # The group rebalances when the second member joins (Tansu takes 10-20 s): wait for the split.
    deadline = time.monotonic() + 120
    while not (all(_assigned(p) >= 1 for p in ports) and sum(_assigned(p) for p in ports) == 3):
        assert time.monotonic() < deadline, f"partitions never split: {[_assigned(p) for p in ports]}\n{engine_run.logs()}"
        time.sleep(0.5)
    fhir = FhirClient(engine_run)
    storescu(engine_run, ct, mr, tmp_path / "relabelled.dcm")

    flags = {}
    for path in (ct, mr, tmp_path / "relabelled.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        report, observations = fhir.report_with_results(str(ds.PatientID))
        found = _by_code(observations)
        assert set(found) == {"CT", "MR", CONTRADICTED}, found
        verdict = found[CONTRADICTED]["interpretation"][0]["coding"][0]["code"]
        flags[(str(ds.Modality), path.name)] = verdict
        predicted = max(("CT", "MR"), key=lambda c: float(found[c]["valueQuantity"]["value"]))
        assert predicted == ("CT" if path != mr else "MR")  # what the pixels are, whatever the tag says
        assert report["code"]["coding"][0]["code"] == "18748-4"
    assert flags == {("CT", "CT_small.dcm"): "NEG", ("MR", "MR_small.dcm"): "NEG", ("MR", "relabelled.dcm"): "POS"}
