"""The Keras adapter on a tiny model built here, on the torch backend."""

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")

from inference.adapters import keras as adapter  # noqa: E402


@contextmanager
def _quiet_numpy2_conversion() -> Iterator[None]:
    # Keras's torch backend converts tensors with np.array(tensor) when saving and in
    # Model.predict, which numpy 2 flags with a DeprecationWarning; the adapter avoids both.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "__array__ implementation doesn't accept a copy keyword", DeprecationWarning)
        yield


def test_saved_model_loads_and_predicts_like_the_original(tmp_path: Path) -> None:
    import keras

    assert keras.backend.backend() == "torch"
    keras.utils.set_random_seed(7)
    inputs = keras.Input(shape=(8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(pooled)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "tiny.keras"
    with _quiet_numpy2_conversion():
        model.save(path)

    batch = np.random.default_rng(3).uniform(-1, 1, size=(4, 8, 8, 3)).astype(np.float32)
    loaded = adapter.load(path)
    got = adapter.predict(loaded, batch)

    assert got.shape == (4, 2) and got.dtype == np.float32
    with _quiet_numpy2_conversion():
        expected = model.predict(batch, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
