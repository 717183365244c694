"""Raw model outputs -> probabilities -> thresholded findings. Pure functions."""

import numpy as np
from numpy.typing import NDArray

from inference.manifest import Manifest
from integration.messages import Finding


def probabilities(raw: NDArray[np.float32], activation: str) -> NDArray[np.float64]:
    """Apply the manifest's activation to raw outputs (one row per image)."""
    values = np.asarray(raw, dtype=np.float64)
    if values.ndim == 1:
        values = values[np.newaxis, :]
    if activation == "softmax":
        shifted = values - values.max(axis=-1, keepdims=True)  # stable: exp never overflows
        exp: NDArray[np.float64] = np.exp(shifted)
        return np.asarray(exp / exp.sum(axis=-1, keepdims=True), dtype=np.float64)
    if activation == "sigmoid":
        return np.asarray(1.0 / (1.0 + np.exp(-values)), dtype=np.float64)
    return values


def findings(manifest: Manifest, probs: NDArray[np.float64]) -> list[Finding]:
    """One Finding per output label, from the mean probability over a request's images."""
    mean = np.asarray(probs, dtype=np.float64).reshape(-1, probs.shape[-1]).mean(axis=0)
    result = []
    for label in manifest.outputs:
        p = float(mean[label.index])
        positive = p >= label.threshold
        result.append(Finding(concept=label.concept, probability=p, threshold=label.threshold, positive=positive))
    return result
