"""Fault injection: an adapter module whose model does what its artifact and its inputs say.

Runner processes import it by name (`tests.inference.scripted_adapter`), as they import a real
adapter. The artifact is a JSON file: `{"hold_mb": N}` keeps N MB resident once loaded,
`{"fail_load": "why"}` fails the load, `{"load_seconds": N}` sleeps N seconds in it, `{"pickle_marker": PATH}`
makes every answer an object that, unpickled, creates the file PATH (a model smuggling code into its answer). A batch's first value is how many seconds predict sleeps;
a second value of 1 kills the runner with SIGKILL, as the out-of-memory killer does, and of 2 raises
a ValueError, as a framework does when it cannot use an input. The outputs
are zeros, two per input.
"""

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from inference.adapters import Batch
from inference.errors import InferenceError


class Smuggled:
    """Unpickling it creates its marker file: code run by whoever unpickles a runner's answer."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_touch, (self.marker,))


def _touch(marker: str) -> None:
    Path(marker).touch()


def load(path: Path) -> object:
    """The memory the artifact asks to hold, written so it is resident."""
    script = json.loads(path.read_text())
    if "pickle_marker" in script:
        return Smuggled(script["pickle_marker"])
    if "fail_load" in script:
        raise InferenceError(script["fail_load"])
    time.sleep(float(script.get("load_seconds", 0)))
    return np.ones(int(script.get("hold_mb", 0) * 2**20), dtype=np.uint8)


def predict(model: object, batch: Batch) -> NDArray[np.float32]:
    """Zeros, after sleeping as long as the batch's first value says (or crashing if its second is 1)."""
    if isinstance(model, Smuggled):
        return np.array([model] * len(batch), dtype=object)  # type: ignore[return-value]
    if isinstance(batch, list):
        raise InferenceError("the scripted model reads arrays")
    values = np.ravel(batch)
    if values.size > 1 and values[1] == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    if values.size > 1 and values[1] == 2:
        raise ValueError("expected a 4-D input")
    time.sleep(float(values[0]))
    return np.zeros((len(batch), 2), dtype=np.float32)
