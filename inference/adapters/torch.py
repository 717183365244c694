"""PyTorch TorchScript models (`torch.jit.save` files): no Python class needed to load them."""

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from inference.adapters import Batch
from inference.errors import InferenceError


def load(path: Path) -> object:
    """Load a TorchScript module on the CPU, in evaluation mode."""
    import torch

    jit: Any = torch.jit  # untyped in torch's stubs
    with warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript in favour of torch.export; TorchScript is still the
        # format model packages ship (the contract), and loading it works as before.
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
        module = jit.load(str(path), map_location="cpu")
    module.eval()
    return module


def predict(model: object, batch: Batch) -> NDArray[np.float32]:
    """The module's single output tensor for a float32 batch, as numpy."""
    import torch

    if isinstance(batch, list):
        raise InferenceError("a TorchScript model reads arrays, not text")
    module: Any = model
    with torch.inference_mode():
        out = module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
    if not isinstance(out, torch.Tensor):
        raise InferenceError(f"expected one output tensor, the model gave {type(out).__name__}")
    return out.detach().cpu().numpy().astype(np.float32)
