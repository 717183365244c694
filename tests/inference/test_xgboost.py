"""The XGBoost adapter on boosters trained here on scikit-learn's breast cancer data (real, bundled)."""

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from inference.adapters import xgboost as adapter


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_saved_booster_predicts_like_the_trained_one(tmp_path: Path, suffix: str) -> None:
    import xgboost

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3}, xgboost.DMatrix(x_train, label=y_train), 50
    )
    path = tmp_path / f"model{suffix}"
    booster.save_model(str(path))

    got = adapter.predict(adapter.load(path), x_test.astype(np.float32))

    assert got.shape == (len(x_test), 2) and got.dtype == np.float32
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(got[:, 1], booster.predict(xgboost.DMatrix(x_test.astype(np.float32))), atol=1e-6)
    assert roc_auc_score(y_test, got[:, 1]) > 0.95


def test_a_directory_of_boosters_is_an_averaged_ensemble(tmp_path: Path) -> None:
    import xgboost

    x, y = load_breast_cancer(return_X_y=True)
    folds = tmp_path / "folds"
    folds.mkdir()
    boosters = []
    for seed in range(3):
        rows = np.random.default_rng(seed).choice(len(x), size=400, replace=False)
        b = xgboost.train({"objective": "binary:logistic", "max_depth": 2}, xgboost.DMatrix(x[rows], label=y[rows]), 20)
        b.save_model(str(folds / f"fold{seed}.ubj"))
        boosters.append(b)

    got = adapter.predict(adapter.load(folds), x[:10].astype(np.float32))

    expected = np.mean([b.predict(xgboost.DMatrix(x[:10].astype(np.float32))) for b in boosters], axis=0)
    np.testing.assert_allclose(got[:, 1], expected, atol=1e-6)
