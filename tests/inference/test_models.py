"""The loaded-model cache: least recently used models are unloaded past the memory budget."""

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from inference import registry
from inference.models import LoadedModel, ModelCache
from integration.manifest import Accepts, Manifest, OutputLabel, Preprocessing
from integration.messages import Coding

CODING = Coding(system="http://loinc.org", code="18748-4", display="Diagnostic imaging study")


def _manifest(name: str) -> Manifest:
    return Manifest(
        name=name,
        version="1",
        framework="xgboost",
        task="tabular",
        accepts=Accepts(features=["mean", "std", "min", "max"]),
        preprocessing=Preprocessing(kind="series-statistics"),
        outputs=[OutputLabel(index=1, concept=CODING)],
        report_code=CODING,
        report_category=CODING,
        artifact="model.ubj",
    )


@pytest.fixture(scope="module")
def boosters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import xgboost

    x, y = load_breast_cancer(return_X_y=True)
    paths = {}
    for name, rounds in (("a", 10), ("b", 10), ("c", 10)):
        path = tmp_path_factory.mktemp(name) / "model.ubj"
        xgboost.train({"objective": "binary:logistic"}, xgboost.DMatrix(x[:, :4], label=y), rounds).save_model(str(path))
        paths[name] = path
    return paths


def test_least_recently_used_model_is_unloaded_past_the_budget(boosters: dict[str, Path]) -> None:
    made: dict[str, LoadedModel] = {}

    def loader(name: str, version: str) -> LoadedModel:
        made[name] = LoadedModel(_manifest(name), boosters[name], registry.adapter_for("xgboost"))
        return made[name]

    size = boosters["a"].stat().st_size
    cache = ModelCache(loader, budget_bytes=2.5 * size)  # room for two
    cache.get("a", "1")
    cache.get("b", "1")
    cache.get("a", "1")  # a is now the most recently used
    cache.get("c", "1")

    assert cache.loaded() == [("a", "1"), ("c", "1")]
    assert not made["b"].is_loaded and made["a"].is_loaded and made["c"].is_loaded
    x = np.zeros((1, 4), dtype=np.float32)
    assert cache.get("b", "1").predict(x).shape == (1, 2)  # loaded again on demand
    assert cache.loaded() == [("c", "1"), ("b", "1")]


def test_a_model_over_budget_alone_is_still_served(boosters: dict[str, Path]) -> None:
    cache = ModelCache(
        lambda name, _v: LoadedModel(_manifest(name), boosters[name], registry.adapter_for("xgboost")), budget_bytes=1
    )
    assert cache.get("a", "1").is_loaded
    assert cache.get("b", "1").is_loaded
    assert cache.loaded() == [("b", "1")]
