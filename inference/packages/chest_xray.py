"""Keras: the Xception NORMAL/PNEUMONIA chest X-ray classifier of PyPI `pneumonia-model-package` 0.3.0."""

from pathlib import Path

from inference.errors import UnknownModel
from inference.packages.installed import package_dir
from storage.fhir.systems import LOINC_SYSTEM, SNOMED_SYSTEM, V2_0074_SYSTEM
from integration.models.manifest import Accepts, Manifest, OutputLabel, Postprocessing, Preprocessing
from integration.messages import Coding


def package(scratch: Path) -> tuple[Manifest, Path]:
    """The manifest and the `.keras` file as installed (demo model, not clinical)."""
    found = sorted((package_dir("pneumonia_model_package") / "trained_models").glob("*.keras"))
    if not found:
        raise UnknownModel("pneumonia_model_package has no trained_models/*.keras")
    manifest = Manifest(
        name="chest-xray-pneumonia",
        version="0.3.0",
        framework="keras",
        task="classification",
        # CR and DX chest radiographs; any SOP class of those modalities.
        accepts=Accepts(modalities=["CR", "DX"], body_parts=["CHEST"], sop_classes=[]),
        # The package trains with ImageDataGenerator(preprocessing_function=xception.preprocess_input)
        # .flow_from_dataframe at img_size 150 in RGB (config.yml), whose default resampling is
        # nearest: with it the adult CR RG1_UNCR.dcm gives p(pneumonia) 0.07, with bilinear 0.54.
        preprocessing=Preprocessing(
            kind="image", size=(150, 150), channels=3, normalisation="xception", resample="nearest"
        ),
        # Output 0 is NORMAL, 1 is PNEUMONIA (config.yml class_names); the last Dense layer is
        # linear, so the outputs are logits and need a softmax.
        postprocessing=Postprocessing(activation="softmax"),
        outputs=[
            OutputLabel(
                index=1,
                concept=Coding(system=SNOMED_SYSTEM, code="233604007", display="Pneumonia (disorder)"),
                threshold=0.5,
            )
        ],
        report_code=Coding(system=LOINC_SYSTEM, code="18748-4", display="Diagnostic imaging study"),
        report_category=Coding(system=V2_0074_SYSTEM, code="RAD", display="Radiology"),
        # Licence undeclared, trained on paediatric images (Kermany et al.): a demo model.
        clinical_use=False,
        artifact=found[0].name,
    )
    return manifest, found[0]
