"""benchmarks/dicom_query.py runs end to end on a handful of studies (the full run is 10,000)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.stack
def test_the_query_benchmark_runs_on_a_few_studies() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dicom_query.py"), "--studies", "24", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("24 studies loaded") and len(lines) == 8  # header, table head, six shapes
    assert "a patient's studies by ID" in done.stdout
