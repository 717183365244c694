"""The model runner's side: the child process that holds one loaded model version and answers its batches.

A worker starts one runner per loaded model version (inference.runners.LoadedModel) with
multiprocessing's spawn context, so a runner is a fresh interpreter that imports only numpy, its
adapter and its framework. Over the pipe it answers `(True, None)` once the model is loaded, then
`(True, outputs)` or `(False, exception)` for each batch it receives, until the worker closes its
end. The worker kills a runner to abandon a job past its timeout or to free its memory.
"""

import importlib
import os
import pickle
import signal
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import cast

from inference.adapters import Adapter
from inference.errors import InferenceError


def serve(conn: Connection, adapter: str, artifact: str, worker_pid: int) -> None:
    """Load the artifact with the adapter module, then answer batches until the pipe closes."""
    # Ctrl-C in a terminal reaches the whole process group; the worker decides when its runners stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_worker, args=(worker_pid,), name="worker-watch", daemon=True).start()
    try:
        module = cast(Adapter, importlib.import_module(adapter))
        model = module.load(Path(artifact))
        conn.send((True, None))
    except Exception as exc:  # sent to the worker, which raises it
        conn.send((False, _sendable(exc)))
        return
    while True:
        try:
            batch = conn.recv()
        except EOFError:  # the worker closed its end: unloaded, or stopping
            return
        answer: tuple[bool, object]
        try:
            answer = (True, module.predict(model, batch))
        except Exception as exc:  # sent to the worker, which raises it for this batch
            answer = (False, _sendable(exc))
        try:
            conn.send(answer)
        except OSError:  # the worker is gone
            return


def _sendable(exc: Exception) -> Exception:
    """The exception itself when it survives pickling, else an InferenceError naming it."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # framework exceptions with constructors pickle cannot call again
        return InferenceError(f"{type(exc).__name__}: {exc}")
    return exc


def _exit_with_worker(worker_pid: int) -> None:
    # A runner busy in native code (or hung) never reads the pipe's end-of-file; when its worker
    # is killed outright (SIGKILL, OOM), the runner is re-parented, and that ends it here.
    while os.getppid() == worker_pid:
        time.sleep(1.0)
    os._exit(1)
