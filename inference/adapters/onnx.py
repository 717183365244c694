"""ONNX models on onnxruntime's CPU provider."""

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from inference.adapters import Batch
from inference.errors import InferenceError


def load(path: Path) -> object:
    """An inference session on the `.onnx` file."""
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def predict(model: object, batch: Batch) -> NDArray[np.float32]:
    """The first output of a single-input model for a float32 batch."""
    if isinstance(batch, list):
        raise InferenceError("this ONNX adapter feeds arrays, not text")
    session: Any = model
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise InferenceError(f"expected a model with one input, it has {len(inputs)}")
    out = session.run(None, {inputs[0].name: np.ascontiguousarray(batch, dtype=np.float32)})
    return np.asarray(out[0], dtype=np.float32)
