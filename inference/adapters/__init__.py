"""Framework adapters: one module per framework, each importing its framework only when called."""

from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

# What a model reads: an array whose first axis is the batch, or report texts (transformers).
Batch = NDArray[np.float32] | list[str]


class Adapter(Protocol):
    """What every adapter module provides."""

    def load(self, path: Path) -> object:
        """Load the artifact at `path` into a ready-to-run model."""
        ...

    def predict(self, model: object, batch: Batch) -> NDArray[np.float32]:
        """Run the model on a batch (first axis = inputs) and return its raw outputs."""
        ...
