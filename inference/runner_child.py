"""The model runner's side: the child process that holds one loaded model version and answers its batches.

A worker starts one runner per loaded model version (inference.runners.LoadedModel) as a fresh
interpreter (`python -m inference.runner_child`) that imports only numpy, its adapter and its
framework, with an environment stripped to what a framework reads (`environment`): no database
URL, object-store keys or JWT secret, since a model package is code its uploader wrote.

Over the socket it answers a ready frame once the model is loaded, then an array or an error for
each batch it receives, until the worker closes its end. Frames are plain bytes (an .npy array,
JSON texts or a JSON error), never pickle: the worker must not run code a model put in an answer.
The worker kills a runner to abandon a job past its timeout or to free its memory.
"""

import importlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Mapping
from io import BytesIO
from multiprocessing.connection import Connection
from pathlib import Path
from typing import cast

import numpy as np
from numpy.typing import NDArray

from inference import errors
from inference.adapters import Adapter, Batch
from inference.errors import InferenceError

# The first byte of a frame says what follows.
_READY, _ARRAY, _TEXTS, _ERROR = b"R", b"A", b"T", b"E"
# What a runner's environment keeps of its worker's: locale, paths, and the knobs of the
# frameworks and their maths libraries. Nothing of ours (DOCTORAI_*), and no name that looks
# like a credential even under a kept prefix (HF_TOKEN).
_KEPT = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME", "LD_LIBRARY_PATH", "VIRTUAL_ENV"})
_KEPT_PREFIXES = ("LC_", "KERAS_", "TORCH", "OMP_", "MKL_", "OPENBLAS_", "CUDA_", "NVIDIA_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "XDG_")
_CREDENTIAL = re.compile(r"TOKEN|SECRET|KEY|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)


class RunnerError(Exception):
    """An error the runner answered: its type's name, its message, and, for our own errors, which one."""

    def __init__(self, kind: str, message: str, inference_error: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.inference_error = kind, message, inference_error

    def as_inference_error(self) -> InferenceError | None:
        """Our own error class raised again by name (InferenceError and its subclasses), else None."""
        found = getattr(errors, self.inference_error, None) if self.inference_error else None
        if isinstance(found, type) and issubclass(found, InferenceError):
            return found(self.message)
        return None


def environment(parent: Mapping[str, str], path: list[str]) -> dict[str, str]:
    """The environment a runner starts with: `parent`'s kept variables, and `path` as PYTHONPATH."""
    kept = {
        k: v
        for k, v in parent.items()
        if (k in _KEPT or k.startswith(_KEPT_PREFIXES)) and not _CREDENTIAL.search(k)
    }
    kept["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    return kept


def _npy(array: NDArray[np.generic]) -> bytes:
    out = BytesIO()
    np.save(out, array, allow_pickle=False)  # ValueError for object arrays: they would need pickle
    return out.getvalue()


def encode_batch(batch: Batch) -> bytes:
    """A batch as one frame: report texts as JSON, arrays as .npy."""
    if isinstance(batch, list):
        return _TEXTS + json.dumps(batch).encode()
    return _ARRAY + _npy(batch)


def decode_batch(frame: bytes) -> Batch:
    """The batch of a frame from `encode_batch`."""
    if frame[:1] == _TEXTS:
        texts = json.loads(frame[1:])
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InferenceError("a text batch must be a list of strings")
        return cast(list[str], texts)
    return cast(NDArray[np.float32], np.load(BytesIO(frame[1:]), allow_pickle=False))


def decode_answer(frame: bytes) -> NDArray[np.generic] | None:
    """The runner's answer: None once loaded, the outputs of a batch; RunnerError for its error."""
    kind, body = frame[:1], frame[1:]
    if kind == _READY:
        return None
    if kind == _ARRAY:
        return cast(NDArray[np.generic], np.load(BytesIO(body), allow_pickle=False))
    if kind == _ERROR:
        error = json.loads(body)
        raise RunnerError(str(error.get("kind", "")), str(error.get("message", "")), str(error.get("inference_error", "")))
    raise RunnerError("ProtocolError", f"an answer frame of unknown kind {kind!r}", "")


def _error(exc: Exception) -> bytes:
    ours = type(exc).__name__ if isinstance(exc, InferenceError) else ""
    return _ERROR + json.dumps({"kind": type(exc).__name__, "message": str(exc)[:4000], "inference_error": ours}).encode()


def serve(conn: Connection, adapter: str, artifact: str, worker_pid: int) -> None:
    """Load the artifact with the adapter module, then answer batches until the pipe closes."""
    # Ctrl-C in a terminal reaches the whole process group; the worker decides when its runners stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_worker, args=(worker_pid,), name="worker-watch", daemon=True).start()
    try:
        module = cast(Adapter, importlib.import_module(adapter))
        model = module.load(Path(artifact))
        conn.send_bytes(_READY)
    except Exception as exc:  # sent to the worker, which raises it
        conn.send_bytes(_error(exc))
        return
    while True:
        try:
            frame = conn.recv_bytes()
        except (EOFError, OSError):  # the worker closed its end: unloaded, or stopping
            return
        try:
            answer = _ARRAY + _npy(np.asarray(module.predict(model, decode_batch(frame))))
        except Exception as exc:  # sent to the worker, which raises it for this batch
            answer = _error(exc)
        try:
            conn.send_bytes(answer)
        except OSError:  # the worker is gone
            return


def _exit_with_worker(worker_pid: int) -> None:
    # A runner busy in native code (or hung) never reads the pipe's end-of-file; when its worker
    # is killed outright (SIGKILL, OOM), the runner is re-parented, and that ends it here.
    while os.getppid() == worker_pid:
        time.sleep(1.0)
    os._exit(1)


def main(argv: list[str]) -> None:
    """`python -m inference.runner_child ADAPTER ARTIFACT WORKER_PID FD`: serve on the inherited socket FD."""
    adapter, artifact, worker_pid, fd = argv
    serve(Connection(int(fd)), adapter, artifact, int(worker_pid))


if __name__ == "__main__":
    main(sys.argv[1:])
