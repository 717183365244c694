"""End to end: CT and MR instances (pydicom's test files) by C-STORE -> TotalSegmentator's XGBoost
classifiers in a worker -> a DiagnosticReport whose contradiction Observation flags only the CT
whose Modality attribute was changed to MR."""

from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.conftest import EngineRun
from tests.inference.packages.fhir_client import FhirClient
from tests.test_pipeline import storescu

CONTRADICTED = "modality-contradicted"


def _by_code(observations: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["code"]["coding"][0]["code"]: o for o in observations}


@pytest.mark.stack
def test_a_series_whose_pixels_contradict_its_modality_is_flagged(engine_run: EngineRun, tmp_path: Path) -> None:
    ct, mr = (Path(str(get_testdata_file(n))) for n in ("CT_small.dcm", "MR_small.dcm"))
    # CT pixels (in HU after the rescale) labelled MR, in a study of their own.
    relabelled = pydicom.dcmread(ct)
    relabelled.Modality, relabelled.PatientID = "MR", "RELABELLED"
    relabelled.StudyInstanceUID, relabelled.SeriesInstanceUID = generate_uid(), generate_uid()
    relabelled.SOPInstanceUID = relabelled.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    relabelled.save_as(tmp_path / "relabelled.dcm")

    engine_run.start(models=("modality-check",))
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
