"""The ONNX adapter on a tiny graph built here with the onnx helper (y = x W + b)."""

from pathlib import Path

import numpy as np
from numpy.typing import NDArray
import onnx
from onnx import TensorProto, helper, numpy_helper

from inference.adapters import onnx as adapter


def tiny_graph(path: Path, rng: np.random.Generator) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Save y = x w + b (x with 4 columns, y with 2) as an ONNX model at `path`, with random w and b; those."""
    w = rng.normal(size=(4, 2)).astype(np.float32)
    b = rng.normal(size=(2,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    # IR version 10 (ONNX 1.16), which every onnxruntime since 1.18 reads; the helper defaults to the newest.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return w, b


def test_graph_runs_on_onnxruntime_like_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    path = tmp_path / "tiny.onnx"
    w, b = tiny_graph(path, rng)
    batch = rng.normal(size=(3, 4)).astype(np.float32)

    got = adapter.predict(adapter.load(path), batch)

    assert got.shape == (3, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, batch @ w + b, rtol=1e-5, atol=1e-6)
