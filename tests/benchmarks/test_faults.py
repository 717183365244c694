"""benchmarks/faults.py --smoke, as anyone reruns it (issue 18): its own stack and PostgreSQL cluster,
every mode at small sizes. The figures that are counts hold exactly: nothing lost or doubled, no 5xx,
no crash, no hang, every answer a protocol-correct refusal. The flood ratios are timings: the
benchmark prints them and the suite does not judge them."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.stack
@pytest.mark.timeout(1200)
def test_the_smoke_run_loses_nothing_doubles_nothing_and_breaks_no_door(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "faults.py"), "--smoke", "--work", str(tmp_path / "faults")],
        capture_output=True, text=True, timeout=1100, check=False, cwd=ROOT,
    )
    summary = re.search(r"^faults: (.*)$", done.stdout, re.MULTILINE)
    assert summary, done.stdout[-4000:] + done.stderr[-4000:]
    figures = dict(pair.split("=") for pair in summary.group(1).split())
    counts = {k: figures[k] for k in ("lost", "duplicated", "5xx", "crashes", "hangs", "wrong")}
    assert counts == dict.fromkeys(counts, "0"), done.stdout
    for mode in ("crash:", "outage:", "fuzz dicom-pdus:", "fuzz mllp:", "fuzz fhir:", "fuzz admin:", "deflate_bomb:"):
        assert re.search(rf"^{mode}", done.stdout, re.MULTILINE), done.stdout
