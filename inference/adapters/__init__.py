"""Framework adapters: one module per framework, each importing its framework only when called."""

from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray


class Adapter(Protocol):
    """What every adapter module provides."""

    def load(self, path: Path) -> object:
        """Load the artifact at `path` into a ready-to-run model."""
        ...

    def predict(self, model: object, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """Run the model on a batch (first axis = images) and return its raw outputs."""
        ...
