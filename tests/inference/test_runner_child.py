"""The model runner: each loaded model version answers from a child process of its own, which a
timeout kills, whose death is a retriable error, and which never outlives its worker."""

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from inference.errors import InferenceError, InferenceTimeout, LoadTimeout, ModelCrashed, ModelFailed
from inference.runners import LoadedModel
from integration.models.manifest import Accepts, Manifest, OutputLabel, Preprocessing
from integration.messages import Coding
from tests.conftest import process_ended
from tests.inference.test_onnx import tiny_graph

ROOT = Path(__file__).resolve().parents[2]
SCRIPTED = "tests.inference.scripted_adapter"
CODING = Coding(system="http://loinc.org", code="18748-4", display="Diagnostic imaging study")
MANIFEST = Manifest(
    name="tiny",
    version="1",
    framework="onnx",
    task="classification",
    accepts=Accepts(modalities=["CR"]),
    preprocessing=Preprocessing(size=(2, 2)),
    outputs=[OutputLabel(index=0, concept=CODING)],
    report_code=CODING,
    report_category=CODING,
    artifact="model.onnx",
)


def _scripted(tmp_path: Path, **script: object) -> LoadedModel:
    artifact = tmp_path / "script.json"
    artifact.write_text(json.dumps(script))
    return LoadedModel(MANIFEST, artifact, SCRIPTED)


def _sleeping(seconds: float) -> NDArray[np.float32]:
    return np.array([[seconds, 0.0]], dtype=np.float32)


def test_an_onnx_model_answers_from_its_runner_like_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    path = tmp_path / "model.onnx"
    w, b = tiny_graph(path, rng)
    model = LoadedModel(MANIFEST, path, "inference.adapters.onnx")
    try:
        assert not model.is_loaded and model.resident_bytes == 0  # lazily: nothing runs before the first use
        model.load()
        pid = model.pid
        assert pid is not None and model.resident_bytes > 10e6
        for rows in (1, 5):
            batch = rng.normal(size=(rows, 4)).astype(np.float32)
            got = model.predict(batch, timeout=30)
            assert got.shape == (rows, 2) and got.dtype == np.float32
            np.testing.assert_allclose(got, batch @ w + b, rtol=1e-5, atol=1e-6)
        assert model.pid == pid  # loaded once, kept in its runner
        # An error of the model itself comes back as raised, and the runner keeps serving.
        with pytest.raises(InferenceError, match="arrays, not text"):
            model.predict(["a report"], timeout=30)
        assert model.pid == pid
    finally:
        model.unload()
    assert process_ended(pid)


def test_a_model_past_the_timeout_is_killed_and_the_next_request_starts_a_new_runner(tmp_path: Path) -> None:
    model = _scripted(tmp_path)
    try:
        model.load()
        slow = model.pid
        assert slow is not None
        with pytest.raises(InferenceTimeout, match="took over 0.5s for 1 inputs"):
            model.predict(_sleeping(60.0), timeout=0.5)
        assert not model.is_loaded and process_ended(slow, timeout=0.1)  # killed, not left running
        assert model.predict(_sleeping(0.0), timeout=30).shape == (1, 2)
        assert model.pid not in (None, slow)
    finally:
        model.unload()


def test_a_runner_that_dies_is_a_retriable_error_and_the_next_request_works(tmp_path: Path) -> None:
    model = _scripted(tmp_path)
    try:
        model.load()
        crashing = np.array([[0.0, 1.0]], dtype=np.float32)
        with pytest.raises(ModelCrashed, match="killed by signal 9") as raised:
            model.predict(crashing, timeout=30)
        assert raised.value.retriable and not model.is_loaded
        assert model.predict(_sleeping(0.0), timeout=30).shape == (1, 2)
    finally:
        model.unload()


def test_an_error_of_the_model_itself_fails_the_job_for_good_and_the_runner_goes_on(tmp_path: Path) -> None:
    model = _scripted(tmp_path)
    try:
        model.load()
        pid = model.pid
        with pytest.raises(ModelFailed, match="ValueError: expected a 4-D input") as raised:
            model.predict(np.array([[0.0, 2.0]], dtype=np.float32), timeout=30)
        assert not raised.value.retriable  # recorded as the job's error and dead-lettered, not retried
        assert model.predict(_sleeping(0.0), timeout=30).shape == (1, 2) and model.pid == pid
    finally:
        model.unload()


def test_a_failed_load_raises_the_adapters_error_and_leaves_no_runner(tmp_path: Path) -> None:
    model = _scripted(tmp_path, fail_load="no weights in this package")
    with pytest.raises(InferenceError, match="no weights in this package") as raised:
        model.load()
    assert not raised.value.retriable and not model.is_loaded and model.pid is None


def test_a_load_past_the_load_timeout_kills_the_runner_like_a_crash(tmp_path: Path) -> None:
    artifact = tmp_path / "script.json"
    artifact.write_text(json.dumps({"load_seconds": 3600}))
    model = LoadedModel(MANIFEST, artifact, SCRIPTED, load_timeout=2.0)
    started = time.perf_counter()
    with pytest.raises(LoadTimeout, match="still loading the model after 2.0s") as raised:
        model.load()
    assert time.perf_counter() - started < 30
    # A crash as the worker counts them (retriable until the job has seen too many), with no runner left.
    assert isinstance(raised.value, ModelCrashed) and raised.value.retriable
    found = re.search(r"pid (\d+)", str(raised.value))
    assert found is not None and process_ended(int(found.group(1)), timeout=0)
    assert not model.is_loaded and model.pid is None

    artifact.write_text("{}")  # the next use starts a new runner, which loads
    try:
        assert model.predict(_sleeping(0.0), timeout=30).shape == (1, 2)
    finally:
        model.unload()


def test_a_runner_ends_when_its_worker_is_killed_even_mid_batch(tmp_path: Path) -> None:
    artifact = tmp_path / "script.json"
    artifact.write_text("{}")
    # A worker process that starts a runner, prints its pid and waits on a batch that never ends.
    worker_code = textwrap.dedent(
        f"""
        import numpy as np
        from pathlib import Path
        from inference.runners import LoadedModel
        from integration.models.manifest import Manifest

        model = LoadedModel(Manifest.model_validate_json({MANIFEST.model_dump_json()!r}), Path({str(artifact)!r}), {SCRIPTED!r})
        model.load()
        print(model.pid, flush=True)
        model.predict(np.array([[3600.0]], dtype=np.float32))
        """
    )
    with subprocess.Popen([sys.executable, "-c", worker_code], cwd=ROOT, stdout=subprocess.PIPE, text=True) as worker:
        try:
            assert worker.stdout is not None
            pid = int(worker.stdout.readline())
            assert not process_ended(pid, timeout=0.5)
        finally:
            worker.kill()  # SIGKILL: no finally, no atexit in the worker
    assert process_ended(pid, timeout=10.0)


def test_a_runners_answer_is_never_unpickled(tmp_path: Path) -> None:
    # Issue 18: the worker un-pickled whatever its runner (a model package's code) sent back.
    marker = tmp_path / "code-ran-in-the-worker"
    model = _scripted(tmp_path, pickle_marker=str(marker))
    try:
        with pytest.raises(ModelFailed, match="Object arrays cannot be saved"):
            model.predict(_sleeping(0.0), timeout=30)
    finally:
        model.unload()
    assert not marker.exists()


def test_a_runner_starts_without_the_workers_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCTORAI_JWT_SECRET", "jwt-secret-the-runner-must-not-see")
    monkeypatch.setenv("DOCTORAI_S3_SECRET_KEY", "s3-secret")
    monkeypatch.setenv("HF_TOKEN", "hub-token")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    model = _scripted(tmp_path)
    try:
        model.load()
        # What the process started with, as the kernel keeps it (os.environ could have been edited since).
        started_with = Path(f"/proc/{model.pid}/environ").read_bytes().split(b"\0")
    finally:
        model.unload()
    names = {entry.split(b"=", 1)[0].decode() for entry in started_with if entry}
    assert not {n for n in names if n.startswith("DOCTORAI_")} and "HF_TOKEN" not in names
    assert {"OMP_NUM_THREADS", "PYTHONPATH", "PATH"} <= names
