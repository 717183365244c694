"""Framework adapters: one module per framework, each importing its framework only when called."""

from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from inference.errors import UnknownModel

# What a model reads: an array whose first axis is the batch, or report texts (transformers).
Batch = NDArray[np.float32] | list[str]

# Module path per framework, imported only in a model's runner process (inference.runner_child): the
# worker process itself never loads a framework.
ADAPTERS: dict[str, str] = {
    "keras": "inference.adapters.keras",
    "torch": "inference.adapters.torch",
    "onnx": "inference.adapters.onnx",
    "transformers": "inference.adapters.transformers",
    "xgboost": "inference.adapters.xgboost",
}


class Adapter(Protocol):
    """What every adapter module provides."""

    def load(self, path: Path) -> object:
        """Load the artifact at `path` into a ready-to-run model."""
        ...

    def predict(self, model: object, batch: Batch) -> NDArray[np.float32]:
        """Run the model on a batch (first axis = inputs) and return its raw outputs."""
        ...


def adapter_module(framework: str) -> str:
    """The name of a framework's adapter module (an Adapter), not imported here."""
    try:
        return ADAPTERS[framework]
    except KeyError:
        raise UnknownModel(f"no adapter for framework {framework!r}") from None
