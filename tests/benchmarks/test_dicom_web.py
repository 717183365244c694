"""benchmarks/dicom_web.py on a tiny corpus: both servers give every instance of each study (its smoke test)."""

from pathlib import Path

import pytest

from benchmarks import dicom_web
from doctorai.stack import StackConfig


@pytest.mark.stack
def test_the_retrieve_benchmark_runs_against_both_servers(services: StackConfig, tmp_path: Path) -> None:
    studies = dicom_web.build_studies(ct_slices=3, cr_images=1)
    rows = dicom_web.measure(studies, services.ports.s3, tmp_path, repeats=1)
    assert [(len(study.files), ours > 0, orthanc > 0) for study, ours, orthanc in rows] == [(3, True, True), (1, True, True)]
