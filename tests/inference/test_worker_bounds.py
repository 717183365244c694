"""A job's bounds (issue 18): the job timeout covers preparing the inputs, and an input object is read
only up to its bound; the job fails with a reason and is dead-lettered, never retried for ever."""

import asyncio
import threading
from pathlib import Path

import pytest

from inference.config import InferenceSettings
from inference.errors import InferenceTimeout, InputTooLarge
from inference.runners import ModelCache
from inference.worker import Worker
from integration.config import IntegrationSettings
from storage.errors import ObjectTooLarge
from tests.inference.test_worker import RG1, _job, _results, _scripted_model, _study_with_job


class _StalledStore:
    """Fault injection: an object store whose reads hang until released (a preparation that overruns)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.reads = 0

    def get_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        self.reads += 1
        self.release.wait()
        return RG1.read_bytes()


@pytest.mark.timeout(120)
def test_a_job_whose_preparation_overruns_its_timeout_fails_and_is_dead_lettered(tmp_path: Path) -> None:
    engine, request = _study_with_job(tmp_path)
    model = _scripted_model(tmp_path)
    store = _StalledStore()
    worker = Worker(
        name="slow",
        models=ModelCache(lambda n, v: model, budget_bytes=1e9),
        objects=store,  # type: ignore[arg-type]
        engine=engine,
        producer=None,  # type: ignore[arg-type]
        settings=InferenceSettings(inference_timeout_seconds=0.5),
        integration=IntegrationSettings(),
    )
    # Not asyncio.run, which joins the executor's threads: the stalled read holds its thread until released.
    loop = asyncio.new_event_loop()
    try:
        prepared = loop.run_until_complete(worker.prepare_request(request))
        assert isinstance(prepared.failure, InferenceTimeout) and "preparing the inputs" in str(prepared.failure)
        assert store.reads == 1
        # Raised after the error result is recorded: integration.kafka dead-letters it, no retry.
        with pytest.raises(InferenceTimeout) as raised:
            loop.run_until_complete(worker.answer(prepared, None))
        assert not raised.value.retriable
        job = _job(engine, "job-1")
        assert job.status == "failed" and job.error.startswith("InferenceTimeout: preparing the inputs took over 0.5s")
        assert _results(engine)["job-1"].error == job.error
    finally:
        store.release.set()
        loop.close()
        model.unload()
        engine.dispose()


def test_an_input_over_the_object_bound_fails_the_job_with_a_reason(tmp_path: Path) -> None:
    engine, request = _study_with_job(tmp_path)
    model = _scripted_model(tmp_path)

    class Small:
        def get_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
            assert max_bytes == 1000  # the store reads at most one byte past the bound
            raise ObjectTooLarge(f"{key} has more than {max_bytes} bytes")

    worker = Worker(
        name="slow",
        models=ModelCache(lambda n, v: model, budget_bytes=1e9),
        objects=Small(),  # type: ignore[arg-type]
        engine=engine,
        producer=None,  # type: ignore[arg-type]
        settings=InferenceSettings(inference_max_object_bytes=1000),
        integration=IntegrationSettings(),
    )
    try:
        prepared = asyncio.run(worker.prepare_request(request))
        with pytest.raises(InputTooLarge, match="inference_max_object_bytes"):
            asyncio.run(worker.answer(prepared, None))
        assert _job(engine, "job-1").status == "failed"
    finally:
        model.unload()
        engine.dispose()
