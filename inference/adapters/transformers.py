"""Hugging Face transformers encoders from a local directory: texts in, sentence embeddings out.

Offline by construction: the directory holds config, weights and tokenizer, and loading never
asks the Hub (local_files_only). Embeddings are the attention-masked mean of the last hidden
state, L2-normalised: the pooling sentence-transformers uses for the MiniLM/MPNet family.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from inference.adapters import Batch
from inference.errors import InferenceError

MAX_TOKENS = 256
CHUNK = 64


@dataclass(frozen=True)
class Encoder:
    """A tokenizer and its model, loaded together."""

    tokenizer: Any
    model: Any


def load(path: Path) -> object:
    """Tokenizer and encoder from a local model directory, in evaluation mode."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    # safetensors only: pytorch_model.bin is a pickle, which runs code when loaded (issue 18).
    model = AutoModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
    model.eval()
    return Encoder(tokenizer=tokenizer, model=model)


def predict(model: object, batch: Batch) -> NDArray[np.float32]:
    """One L2-normalised embedding row per text."""
    import torch

    if not isinstance(batch, list):
        raise InferenceError("a transformers encoder reads texts")
    if not isinstance(model, Encoder):
        raise InferenceError(f"expected an Encoder, got {type(model).__name__}")
    rows: list[NDArray[np.float32]] = []
    for start in range(0, len(batch), CHUNK):
        tokens = model.tokenizer(
            batch[start : start + CHUNK], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = model.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        rows.append(torch.nn.functional.normalize(pooled, dim=1).cpu().numpy().astype(np.float32))
    if not rows:
        return np.zeros((0, int(model.model.config.hidden_size)), dtype=np.float32)
    return np.concatenate(rows)
