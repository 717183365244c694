"""Raw model outputs -> probabilities -> thresholded findings. Pure functions."""

import numpy as np
from numpy.typing import NDArray

from inference.errors import InferenceError
from integration.models.manifest import Manifest
from integration.messages import Finding, Measurement


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


def contradiction(manifest: Manifest, probs: NDArray[np.float64], attribute_value: str) -> Finding | None:
    """The finding that the input's attribute (e.g. Modality) contradicts what the model sees, if checked.

    Its probability is 1 - p(class standing for the attribute's value); a value no class stands
    for is contradicted outright.
    """
    label = manifest.postprocessing.contradiction
    if not manifest.postprocessing.compare_with_attribute or label is None:
        return None
    mean = np.asarray(probs, dtype=np.float64).reshape(-1, probs.shape[-1]).mean(axis=0)
    wanted = attribute_value.strip().upper()
    agreeing = [float(mean[o.index]) for o in manifest.outputs if o.attribute_value.upper() == wanted]
    p = 1.0 - (agreeing[0] if agreeing else 0.0)
    return Finding(concept=label.concept, probability=p, threshold=label.threshold, positive=p >= label.threshold)


def volume_measurements(manifest: Manifest, voxels: int, spacing: tuple[float, float, float]) -> list[Measurement]:
    """Each measurement output of a segmentation: the mask's volume in its unit (mm3, cm3 or mL)."""
    mm3 = voxels * float(np.prod(spacing))
    # UCUM: 1 cm3 = 1 mL = 1000 mm3.
    per_unit = {"mm3": 1.0, "cm3": 1000.0, "mL": 1000.0}
    found = []
    for label in manifest.outputs[1:]:
        if label.unit not in per_unit:
            raise InferenceError(f"cannot express a volume in {label.unit!r}")
        found.append(Measurement(concept=label.concept, value=mm3 / per_unit[label.unit], unit=label.unit, text=label.text))
    return found
