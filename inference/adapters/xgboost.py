"""XGBoost boosters (`.json` or `.ubj`); a directory of boosters is an ensemble whose outputs are averaged."""

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from inference.adapters import Batch
from inference.errors import InferenceError

SUFFIXES = (".json", ".ubj")


def load(path: Path) -> object:
    """One booster, or every booster of a directory (cross-validation folds), in name order."""
    import xgboost

    files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise InferenceError(f"no {' or '.join(SUFFIXES)} booster in {path}")
    boosters = []
    for file in files:
        booster = xgboost.Booster()
        booster.load_model(str(file))  # the suffix says which format: JSON or UBJSON
        boosters.append(booster)
    return boosters


def predict(model: object, batch: Batch) -> NDArray[np.float32]:
    """Class probabilities, one column per class (binary models: [p(0), p(1)]), averaged over boosters."""
    import xgboost

    if isinstance(batch, list) or not isinstance(model, list):
        raise InferenceError("an XGBoost model reads a 2-D float array of features")
    values = np.asarray(batch, dtype=np.float32)
    outputs = []
    for booster in model:
        # Boosters trained on a DataFrame insist on its column names; columns are in the manifest's order.
        features = xgboost.DMatrix(values, feature_names=booster.feature_names)
        outputs.append(np.asarray(booster.predict(features), dtype=np.float64))
    mean = np.mean(outputs, axis=0)
    if mean.ndim == 1:  # binary:logistic gives p(class 1) only
        mean = np.stack([1.0 - mean, mean], axis=1)
    return np.asarray(mean, dtype=np.float32)
