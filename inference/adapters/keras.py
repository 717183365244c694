"""Keras 3 models (`.keras`, `.h5`) on the torch backend: TensorFlow is not needed."""

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from inference.adapters import Batch
from inference.errors import InferenceError


def load(path: Path) -> object:
    """Load a saved Keras model for inference (no optimizer state)."""
    # Keras reads its backend once, at first import; torch unless the site chose another.
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    # Safe mode (the default, said here so no one turns it off): no Lambda layers' bytecode, no
    # classes outside Keras's own. An .h5 file goes through the legacy loader, which safe mode
    # does not cover: workers load one only when an admin allowed it (integration.models.formats).
    return keras.models.load_model(path, compile=False, safe_mode=True)


def predict(model: object, batch: Batch) -> NDArray[np.float32]:
    """The model's raw outputs for a batch (single-output models), as float32 numpy."""
    import keras

    if isinstance(batch, list):
        raise InferenceError("a Keras model reads arrays, not text")
    keras_model: Any = model
    if keras.backend.backend() != "torch":
        return np.asarray(keras_model.predict(batch, verbose=0), dtype=np.float32)
    import torch

    # One forward call without autograd: Model.predict adds a per-call dataset pipeline and
    # converts tensors with np.array(), which numpy 2 warns about for torch tensors.
    with torch.inference_mode():
        out = keras_model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)), training=False)
    if not isinstance(out, torch.Tensor):
        raise InferenceError(f"expected one output tensor, the model gave {type(out).__name__}")
    return out.detach().cpu().numpy().astype(np.float32)
