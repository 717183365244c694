"""The loaded-model cache: least recently used runners are stopped when their resident memory exceeds the budget."""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from inference.adapters import adapter_module
from inference.runners import LoadedModel, ModelCache
from integration.models.manifest import Accepts, Manifest, OutputLabel, Preprocessing
from integration.messages import Coding
from tests.conftest import process_ended

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


def _xgboost(paths: dict[str, Path]) -> Callable[[str, str], LoadedModel]:
    return lambda name, _v: LoadedModel(_manifest(name), paths[name], adapter_module("xgboost"))


@pytest.fixture(scope="module")
def runner_bytes(boosters: dict[str, Path]) -> int:
    """The resident memory of one booster's runner (the three boosters are alike)."""
    model = _xgboost(boosters)("a", "1")
    model.load()
    try:
        return model.resident_bytes
    finally:
        model.unload()


def test_least_recently_used_model_is_unloaded_past_the_budget(boosters: dict[str, Path], runner_bytes: int) -> None:
    made: dict[str, LoadedModel] = {}

    def loader(name: str, version: str) -> LoadedModel:
        made[name] = _xgboost(boosters)(name, version)
        return made[name]

    cache = ModelCache(loader, budget_bytes=2.5 * runner_bytes)  # room for two runners
    try:
        cache.get("a", "1")
        b = cache.get("b", "1").pid
        cache.get("a", "1")  # a is now the most recently used
        cache.get("c", "1")

        assert cache.loaded() == [("a", "1"), ("c", "1")]
        assert not made["b"].is_loaded and made["a"].is_loaded and made["c"].is_loaded
        assert b is not None and process_ended(b, timeout=0.1)
        x = np.zeros((1, 4), dtype=np.float32)
        assert cache.get("b", "1").predict(x).shape == (1, 2)  # loaded again on demand
        assert cache.loaded() == [("c", "1"), ("b", "1")]
    finally:
        cache.close()
    assert cache.loaded() == []


def test_a_model_over_budget_alone_is_still_served(boosters: dict[str, Path]) -> None:
    cache = ModelCache(_xgboost(boosters), budget_bytes=1)
    try:
        assert cache.get("a", "1").is_loaded
        assert cache.get("b", "1").is_loaded
        assert cache.loaded() == [("b", "1")]
    finally:
        cache.close()


def test_the_budget_counts_what_a_runner_holds_not_the_artifacts_size(
    boosters: dict[str, Path], runner_bytes: int, tmp_path: Path
) -> None:
    # A few bytes of artifact that hold 300 MB once loaded (the scripted fault-injection adapter).
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"hold_mb": 300}))
    hungry = LoadedModel(_manifest("hungry"), script, "tests.inference.scripted_adapter")
    hungry.load()
    hungry_bytes = hungry.resident_bytes
    hungry.unload()
    assert hungry_bytes > 300 * 2**20 > 1000 * script.stat().st_size

    loader = _xgboost(boosters)
    # Room for both boosters' runners, or for one of them beside the hungry model, not for all three.
    cache = ModelCache(
        lambda name, v: hungry if name == "hungry" else loader(name, v),
        budget_bytes=runner_bytes + hungry_bytes + runner_bytes / 2,
    )
    try:
        a = cache.get("a", "1").pid
        b = cache.get("b", "1").pid
        assert cache.loaded() == [("a", "1"), ("b", "1")]
        cache.get("hungry", "1")
        assert cache.loaded() == [("b", "1"), ("hungry", "1")]
        assert a is not None and process_ended(a, timeout=0.1) and not process_ended(b or 0, timeout=0)
        assert cache.resident_bytes() <= runner_bytes + hungry_bytes + runner_bytes / 2
    finally:
        cache.close()
    assert process_ended(b or 0, timeout=0.1)
