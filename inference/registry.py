"""The model packages this install knows and the adapter module of each framework: plain dicts."""

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import cast

from inference.adapters import Adapter
from inference.errors import UnknownModel
from inference.manifest import Accepts, Manifest, OutputLabel, Preprocessing
from integration.messages import Coding

# Module path per framework, imported on demand so a worker loads only its own framework.
ADAPTERS: dict[str, str] = {
    "keras": "inference.adapters.keras",
}

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
# HL7 v2 table 0074 Diagnostic Service Section ID, the code system FHIR DiagnosticReport.category uses.
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"


def _package_dir(package: str) -> Path:
    # Locate an installed package without importing it: its __init__ may need dependencies a
    # worker does not have (pneumonia_model_package imports strictyaml, loguru, tensorflow).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModel(f"package {package} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def chest_xray_pneumonia() -> tuple[Manifest, Path]:
    """Xception NORMAL/PNEUMONIA classifier from PyPI `pneumonia-model-package` 0.3.0 (demo, not clinical)."""
    found = sorted((_package_dir("pneumonia_model_package") / "trained_models").glob("*.keras"))
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
            size=(150, 150), channels=3, normalisation="xception", resample="nearest", invert_monochrome1=True
        ),
        # Output 0 is NORMAL, 1 is PNEUMONIA (config.yml class_names); the last Dense layer is
        # linear, so the outputs are logits and need a softmax.
        outputs=[
            OutputLabel(
                index=1,
                concept=Coding(system=SNOMED, code="233604007", display="Pneumonia (disorder)"),
                threshold=0.5,
            )
        ],
        activation="softmax",
        report_code=Coding(system=LOINC, code="18748-4", display="Diagnostic imaging study"),
        report_category=Coding(system=V2_0074, code="RAD", display="Radiology"),
        # Licence undeclared, trained on paediatric images (Kermany et al.): a demo model.
        clinical_use=False,
        artifact=found[0].name,
    )
    return manifest, found[0]


BUILTIN: dict[str, Callable[[], tuple[Manifest, Path]]] = {
    "chest-xray-pneumonia": chest_xray_pneumonia,
}


def lookup(name: str) -> tuple[Manifest, Path]:
    """The manifest and artifact path of a registered model package."""
    try:
        package = BUILTIN[name]
    except KeyError:
        raise UnknownModel(f"no model package named {name!r}; known: {', '.join(sorted(BUILTIN))}") from None
    return package()


def adapter_for(framework: str) -> Adapter:
    """Import the adapter module of a framework (and so the framework) now, not before."""
    try:
        module = ADAPTERS[framework]
    except KeyError:
        raise UnknownModel(f"no adapter for framework {framework!r}") from None
    return cast(Adapter, importlib.import_module(module))
