"""The TorchScript adapter on a tiny module scripted here."""

import warnings
from pathlib import Path

import numpy as np
import torch

from inference.adapters import torch as adapter


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def test_scripted_module_loads_without_its_class_and_predicts_the_same(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = Tiny().eval()
    path = tmp_path / "tiny.pt"
    with warnings.catch_warnings():
        # TorchScript is the format sites and packages (deepbet) ship; torch 2.13 deprecates making it.
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", "`torch.jit.save` is deprecated", DeprecationWarning)
        torch.jit.script(module).save(str(path))
    batch = np.random.default_rng(1).normal(size=(5, 2, 3)).astype(np.float32)

    got = adapter.predict(adapter.load(path), batch)

    with torch.no_grad():
        expected = module(torch.from_numpy(batch)).numpy()
    assert got.shape == (5, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
