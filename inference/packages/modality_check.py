"""XGBoost: modality sanity check with TotalSegmentator 2.18.0's bundled CT-vs-MR classifiers.

Five boosters (one per cross-validation fold, 100 trees each) read [mean, std, min, max] of a
series' voxel values in modality units (HU for CT) and give p(MR). Averaged, they flag a series
whose pixels contradict its Modality attribute (0008,0060).
"""

import shutil
from pathlib import Path

from inference.errors import UnknownModel
from inference.packages.installed import LOCAL, package_dir
from storage.fhir.systems import DCM_SYSTEM, LOINC_SYSTEM, V2_0074_SYSTEM
from integration.models.manifest import Accepts, Manifest, OutputLabel, Postprocessing, Preprocessing, SeriesSelection
from integration.messages import Coding

FILES = "resources/modality_classifiers_2025_02_24.json"


def package(scratch: Path) -> tuple[Manifest, Path]:
    """The manifest and a directory of the five boosters, renamed `.ubj` (UBJSON, whatever their name says)."""
    sources = [package_dir("totalsegmentator") / f"{FILES}.{fold}" for fold in range(5)]
    if not all(s.is_file() for s in sources):
        raise UnknownModel(f"totalsegmentator has no {FILES}.0..4")
    artifact = scratch / "modality-classifiers"
    artifact.mkdir(parents=True, exist_ok=True)
    for fold, source in enumerate(sources):
        target = artifact / f"fold{fold}.ubj"
        if not target.is_file():
            shutil.copyfile(source, target)
    manifest = Manifest(
        name="modality-check",
        version="2025.02.24",
        framework="xgboost",
        task="tabular",
        accepts=Accepts(
            modalities=["CT", "MR"],
            series=SeriesSelection(min_instances=1, choose="most-instances"),
            features=["mean", "std", "min", "max"],
        ),
        preprocessing=Preprocessing(kind="series-statistics"),
        postprocessing=Postprocessing(
            compare_with_attribute="Modality",
            contradiction=OutputLabel(
                concept=Coding(
                    system=LOCAL, code="modality-contradicted", display="Pixel data contradict the Modality attribute"
                ),
                threshold=0.5,
            ),
        ),
        # DICOM CID 29 acquisition modality codes.
        outputs=[
            OutputLabel(index=0, concept=Coding(system=DCM_SYSTEM, code="CT", display="Computed Tomography"), attribute_value="CT"),
            OutputLabel(index=1, concept=Coding(system=DCM_SYSTEM, code="MR", display="Magnetic Resonance"), attribute_value="MR"),
        ],
        report_code=Coding(system=LOINC_SYSTEM, code="18748-4", display="Diagnostic imaging study"),
        report_category=Coding(system=V2_0074_SYSTEM, code="RAD", display="Radiology"),
        clinical_use=False,
        artifact=artifact.name,
    )
    return manifest, artifact
