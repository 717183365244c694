"""The worker's model holder on the real chest model, and its job + audit transaction on SQLite."""

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import numpy as np
import psutil
import pytest
from aiokafka import TopicPartition
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

os.environ.setdefault("KERAS_BACKEND", "torch")

from audit.log import trail  # noqa: E402
from audit.records import INFERENCE_RUN, Outcome  # noqa: E402
from inference import adapters, preprocess  # noqa: E402
from inference.runners import LoadedModel, ModelCache  # noqa: E402
from inference.packages import lookup  # noqa: E402
from inference.config import InferenceSettings  # noqa: E402
from inference.errors import InferenceTimeout, ModelCrashed, TooManyCrashes, UnknownJob  # noqa: E402
from inference.inputs import ModelInput  # noqa: E402
from inference.postprocess import findings, probabilities  # noqa: E402
from inference.worker import Prepared, Worker, record_outcome  # noqa: E402
from integration import kafka, topics  # noqa: E402
from integration.config import IntegrationSettings  # noqa: E402
from integration.models.manifest import Preprocessing  # noqa: E402
from integration.messages import DeadLetter, InferenceRequest, InferenceResult, InstanceRef  # noqa: E402
from doctorai.stack import StackConfig  # noqa: E402
from sqlalchemy import Engine, select  # noqa: E402
from storage.config import StorageSettings  # noqa: E402
from storage.db import make_engine, migrate, read_scope, session_scope  # noqa: E402
from storage.objects import ObjectStore, dicom_key, make_object_store  # noqa: E402
from storage.instances import correlation_id_for_study, record_instance  # noqa: E402
from storage.jobs import create_job  # noqa: E402
from storage.tables.audit import AuditEvent  # noqa: E402
from storage.tables.pipeline import InferenceJob, OutboxEvent  # noqa: E402
from tests.conftest import process_ended  # noqa: E402
from tests.studies import received  # noqa: E402

RG1 = Path(str(get_testdata_file("RG1_UNCR.dcm")))


def test_real_chest_model_gives_two_probabilities() -> None:
    manifest, artifact = lookup("chest-xray-pneumonia")
    model = LoadedModel(manifest, artifact, adapters.adapter_module(manifest.framework))
    x = preprocess.prepare(RG1.read_bytes(), manifest)
    try:
        raw = model.predict(x[np.newaxis])
        pid = model.pid
        model.load()
        assert pid is not None and model.pid == pid  # loaded once, kept in its runner
    finally:
        model.unload()
    assert raw.shape == (1, 2)
    probs = probabilities(raw, manifest.activation)
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert ((probs >= 0) & (probs <= 1)).all()
    [finding] = findings(manifest, probs)
    # An adult radiograph, out of the (paediatric) training domain; the model calls it normal.
    assert finding.probability < 0.5 and not finding.positive


def _request(job_id: str, study_uid: str, ref: InstanceRef) -> InferenceRequest:
    return InferenceRequest(
        correlation_id=correlation_id_for_study(study_uid),
        job_id=job_id,
        study_uid=study_uid,
        revision=1,
        model="chest-xray-pneumonia",
        model_version="0.3.0",
        inputs=[ref],
        last_received_at=datetime.now(UTC),
    )


@pytest.mark.parametrize("error", ["", "CannotDecode: cannot decode pixel data"])
def test_outcome_marks_job_and_appends_audit_in_one_transaction(tmp_path: Path, error: str) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    engine = make_engine(url)
    ds = dcmread(RG1, stop_before_pixels=True)
    study_uid, series_uid, sop_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    key = dicom_key(study_uid, series_uid, sop_uid)
    item = received(
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        patient_id=str(ds.get("PatientID", "")),
        accession_number=str(ds.get("AccessionNumber", "")),
        study_date=str(ds.get("StudyDate", "")),
        study_description="",
        modality=str(ds.Modality),
        body_part=str(ds.BodyPartExamined),
        series_number=None,
        instance_number=None,
        object_key=key,
        size=RG1.stat().st_size,
        sha256="0" * 64,
        calling_ae="TEST",
    )
    with session_scope(engine) as session:
        record_instance(session, item=item)
        create_job(
            session,
            job_id="job-1",
            study_uid=study_uid,
            revision=1,
            model="chest-xray-pneumonia",
            model_version="0.3.0",
        )

    manifest, _ = lookup("chest-xray-pneumonia")
    ref = InstanceRef(
        series_uid=series_uid,
        sop_uid=sop_uid,
        sop_class_uid=item.sop_class_uid,
        modality="CR",
        body_part="CHEST",
        object_key=key,
    )
    prepared = Prepared(request=_request("job-1", study_uid, ref), input_keys=[key], error=error)
    with session_scope(engine) as session:
        record_outcome(session, manifest=manifest, item=prepared)

    with session_scope(engine) as session:
        job = session.get(InferenceJob, "job-1")
        assert job is not None
        assert job.status == ("failed" if error else "done")
        assert job.error == error
        assert job.finished_at is not None
        [record] = trail(session, correlation_id=correlation_id_for_study(study_uid))[-1:]
        assert record.subtype == INFERENCE_RUN.subtype
        assert record.agent_who == "model:chest-xray-pneumonia:0.3.0"
        assert record.entity_what == study_uid
        assert record.outcome == (Outcome.MINOR_FAILURE if error else Outcome.SUCCESS).value
        assert record.detail["input_keys"] == key
        assert record.detail["outcome"] == job.status

    with pytest.raises(UnknownJob), session_scope(engine) as session:
        record_outcome(
            session, manifest=manifest, item=Prepared(request=_request("no-such-job", study_uid, ref), input_keys=[key])
        )
    engine.dispose()


def _database(tmp_path: Path) -> Engine:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    migrate(url)
    return make_engine(url)


def _with_job(engine: Engine, ds: Dataset, job_id: str, *, status: str = "queued") -> InferenceRequest:
    """Index the instance `ds` (a chest CR) as the listener would, and queue a job of model "slow" 1 on its study."""
    study_uid, series_uid, sop_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    key = dicom_key(study_uid, series_uid, sop_uid)
    item = received(
        study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid, sop_class_uid=str(ds.SOPClassUID), patient_id="P",
        accession_number="", study_date="", study_description="", series_number=None, instance_number=None,
        object_key=key, size=1, sha256="0" * 64, calling_ae="T", source_address="",
    )
    with session_scope(engine) as session:
        record_instance(session, item=item)
        job = create_job(session, job_id=job_id, study_uid=study_uid, revision=1, model="slow", model_version="1")
        assert job is not None
        job.status = status
    ref = InstanceRef(
        series_uid=series_uid, sop_uid=sop_uid, sop_class_uid=item.sop_class_uid, modality="CR", body_part="CHEST",
        object_key=key,
    )
    return _request(job_id, study_uid, ref).model_copy(update={"model": "slow", "model_version": "1"})


def _study_with_job(tmp_path: Path, *, status: str = "queued") -> tuple[Engine, InferenceRequest]:
    """A SQLite database holding RG1's study and one job on it."""
    engine = _database(tmp_path)
    return engine, _with_job(engine, dcmread(RG1, stop_before_pixels=True), "job-1", status=status)


def _worker(engine: Engine, cache: ModelCache, timeout: float = 120.0) -> Worker:
    return Worker(
        name="slow",
        models=cache,
        objects=make_object_store(StorageSettings()),  # never reached by these tests
        engine=engine,
        producer=None,  # type: ignore[arg-type]  # only the dead-letter path (not run here) publishes
        settings=InferenceSettings(inference_timeout_seconds=timeout),
        integration=IntegrationSettings(),
    )


def _scripted_model(
    tmp_path: Path, *, load_timeout: float | None = None, preprocessing: Preprocessing | None = None, **script: object
) -> LoadedModel:
    """The chest model as model "slow" 1, whose inputs say how long it takes or whether its runner
    dies, and whose artifact `script` how it loads (fault injection: tests/inference/scripted_adapter.py)."""
    manifest, _ = lookup("chest-xray-pneumonia")
    update: dict[str, object] = {"name": "slow", "version": "1"}
    if preprocessing is not None:
        update["preprocessing"] = preprocessing
    artifact = tmp_path / "script.json"
    artifact.write_text(json.dumps(script))
    return LoadedModel(
        manifest.model_copy(update=update), artifact, "tests.inference.scripted_adapter", load_timeout=load_timeout
    )


def _scripted_worker(tmp_path: Path, timeout: float = 120.0) -> tuple[Engine, InferenceRequest, LoadedModel, Worker]:
    """A queued job, and a worker whose model is scripted (_scripted_model)."""
    engine, request = _study_with_job(tmp_path)
    model = _scripted_model(tmp_path)
    return engine, request, model, _worker(engine, ModelCache(lambda n, v: model, budget_bytes=1e9), timeout)


def _item(request: InferenceRequest, model: LoadedModel, *, seconds: float = 0.0, crash: bool = False) -> Prepared:
    batch = np.zeros((1, 150, 150, 3), dtype=np.float32)
    batch.flat[:2] = (seconds, 1.0 if crash else 0.0)
    return Prepared(
        request=request, input_keys=["k"], model=model, model_input=ModelInput(batch=batch, input_keys=["k"])
    )


def _job(engine: Engine, job_id: str) -> InferenceJob:
    with read_scope(engine) as session:
        job = session.get(InferenceJob, job_id)
        assert job is not None
        return job


def _status(engine: Engine, job_id: str) -> str:
    return _job(engine, job_id).status


def _results(engine: Engine) -> dict[str, InferenceResult]:
    """The results the worker queued for the outbox relay, by job."""
    with read_scope(engine) as session:
        found = [InferenceResult.model_validate_json(e.payload) for e in session.scalars(select(OutboxEvent))]
    return {r.job_id: r for r in found}


def _second_job(engine: Engine, request: InferenceRequest) -> InferenceRequest:
    with session_scope(engine) as session:
        create_job(session, job_id="job-2", study_uid=request.study_uid, revision=2, model="slow", model_version="1")
    return request.model_copy(update={"job_id": "job-2", "revision": 2})


def test_a_job_past_its_timeout_is_abandoned_failed_and_reported(tmp_path: Path) -> None:
    engine, request, model, worker = _scripted_worker(tmp_path, timeout=0.2)
    model.load()
    slow = model.pid
    assert slow is not None

    # Its runner is killed, not left running the model; the job's error is raised after it was
    # recorded, so the request is dead-lettered too.
    try:
        started = time.perf_counter()
        with pytest.raises(InferenceTimeout):
            asyncio.run(worker.answer(_item(request, model, seconds=60.0), None))
        assert time.perf_counter() - started < 30
        assert process_ended(slow, timeout=0.1)

        with session_scope(engine) as session:
            job = session.get(InferenceJob, "job-1")
            assert job is not None and job.status == "failed" and job.error.startswith("InferenceTimeout")
            [event] = session.scalars(select(OutboxEvent)).all()
        result = InferenceResult.model_validate_json(event.payload)
        assert event.topic == "inference.result" and result.error.startswith("InferenceTimeout") and result.findings == []

        # The next job starts a new runner.
        asyncio.run(worker.answer(_item(_second_job(engine, request), model), None))
        assert model.pid not in (None, slow)
        assert _status(engine, "job-2") == "done"
    finally:
        model.unload()
        engine.dispose()


def test_a_runner_that_dies_leaves_the_job_queued_for_a_retry(tmp_path: Path) -> None:
    engine, request, model, worker = _scripted_worker(tmp_path)
    try:
        with pytest.raises(ModelCrashed) as raised:
            asyncio.run(worker.answer(_item(request, model, crash=True), None))
        assert raised.value.retriable  # integration.kafka retries the request with backoff
        assert _status(engine, "job-1") == "queued"
        with session_scope(engine) as session:
            assert session.scalars(select(OutboxEvent)).all() == []

        asyncio.run(worker.answer(_item(request, model), None))  # the retry, on a new runner
        assert _status(engine, "job-1") == "done"
    finally:
        model.unload()
        engine.dispose()


def test_a_redelivered_request_of_a_finished_job_does_not_run_again(tmp_path: Path) -> None:
    engine, request = _study_with_job(tmp_path, status="done")

    def no_loading(name: str, version: str) -> LoadedModel:
        raise AssertionError("a finished job must not load its model")

    worker = _worker(engine, ModelCache(no_loading, budget_bytes=1e9))
    prepared = asyncio.run(worker.prepare_request(request))
    assert prepared.duplicate
    asyncio.run(worker.answer(prepared, None))
    with session_scope(engine) as session:
        assert session.scalars(select(OutboxEvent)).all() == []
        assert session.scalars(select(AuditEvent)).all() == []
    engine.dispose()


def test_a_job_whose_runner_dies_every_time_fails_after_the_crashes_allowed(tmp_path: Path) -> None:
    engine, request, model, _ = _scripted_worker(tmp_path)
    poison = _item(request, model, crash=True)
    try:
        for crashes in (1, 2):
            # A new worker each time, as after a restart: the count is the job's, in the database.
            worker = _worker(engine, ModelCache(lambda n, v: model, budget_bytes=1e9))
            with pytest.raises(ModelCrashed):
                asyncio.run(worker.answer(poison, None))
            job = _job(engine, "job-1")
            assert (job.status, job.crashes) == ("queued", crashes) and _results(engine) == {}

        # The third crash fails the job; its error is raised after it was recorded, so the request
        # is dead-lettered.
        worker = _worker(engine, ModelCache(lambda n, v: model, budget_bytes=1e9))
        with pytest.raises(TooManyCrashes, match="died 3 times on this job; the last time: .*killed by signal 9"):
            asyncio.run(worker.answer(poison, None))
        job = _job(engine, "job-1")
        assert (job.status, job.crashes) == ("failed", 3) and job.error.startswith("TooManyCrashes: ")
        assert _results(engine)["job-1"].error == job.error

        asyncio.run(worker.answer(_item(_second_job(engine, request), model), None))  # the model still works
        assert (_status(engine, "job-2"), _job(engine, "job-2").crashes) == ("done", 0)
    finally:
        model.unload()
        engine.dispose()


# Through the scripted model, a 2x2 image reads as its four pixels, 0..1, row by row: one whose top
# row is white kills the runner (its second value is 1), one whose bottom row is white runs at once.
TINY = Preprocessing(size=(2, 2), resample="nearest")


def _tiny_image_job(engine: Engine, store: ObjectStore, job_id: str, *, white_row: int) -> InferenceRequest:
    """A 2x2 chest image (RG1's header), stored and indexed as a study of its own, with a job on it."""
    ds = dcmread(RG1)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    pixels = np.zeros((2, 2), dtype=np.uint16)
    pixels[white_row] = 1000
    ds.Rows, ds.Columns, ds.PixelData = 2, 2, pixels.tobytes()
    ds.PhotometricInterpretation = "MONOCHROME2"
    del ds.WindowCenter, ds.WindowWidth  # stretched min to max instead: exactly 0 and 1
    request = _with_job(engine, ds, job_id)
    data = BytesIO()
    ds.save_as(data)
    store.put_bytes(request.inputs[0].object_key, data.getvalue(), "application/dicom")
    return request


def _runners() -> set[int]:
    """The model runners this process runs now (its `python -m inference.runner_child` children)."""
    found = set()
    for child in psutil.Process().children():
        try:
            if "inference.runner_child" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                found.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture
def stored(services: StackConfig, tmp_path: Path) -> Iterator[tuple[Engine, ObjectStore]]:
    """A SQLite database, and the local stack's object store."""
    engine = _database(tmp_path)
    yield engine, make_object_store(services.storage_settings())
    engine.dispose()


def _serve(
    services: StackConfig, stored: tuple[Engine, ObjectStore], model: LoadedModel, requests: list[InferenceRequest],
    *, letters: int,
) -> tuple[list[DeadLetter], int, set[int]]:
    """Publish the requests on a one-partition request topic and run a worker serving `model` on it
    until each job is done or failed; the `letters` dead letters it published, the offset it
    committed, and the runners it started that still ran when it stopped."""
    engine, store = stored
    integration = IntegrationSettings(
        kafka_bootstrap=f"127.0.0.1:{services.ports.kafka}",
        topic_prefix=f"c{uuid.uuid4().hex[:6]}.",
        topic_partitions=1,
        retry_first_delay_seconds=0.1,
        retry_max_delay_seconds=0.2,
    )
    request_topic = topics.inference_request("slow")
    cache = ModelCache(lambda n, v: model, budget_bytes=1e9)

    def finished() -> bool:
        return all(_status(engine, r.job_id) != "queued" for r in requests)

    async def scenario() -> tuple[list[DeadLetter], int]:
        await kafka.ensure_topics(integration, [request_topic, topics.DLQ])
        producer = kafka.make_producer(integration)
        await producer.start()
        try:
            for request in requests:
                await kafka.publish(producer, integration, topic=request_topic, key=request.study_uid, message=request)
            consumer = kafka.make_consumer(integration, group_id=f"g{uuid.uuid4().hex[:6]}", names=[request_topic])
            await consumer.start()
            try:
                worker = Worker(
                    name="slow", models=cache, objects=store, engine=engine, producer=producer,
                    settings=InferenceSettings(inference_max_crashes=3), integration=integration,
                )
                stop = asyncio.Event()
                serving = asyncio.create_task(worker.run(consumer, stop=stop))
                async with asyncio.timeout(180):
                    while not serving.done() and not await asyncio.to_thread(finished):
                        await asyncio.sleep(0.2)
                stop.set()
                await serving  # its last batch answered (dead letters published) and committed
                partition = TopicPartition(topics.qualified(integration.topic_prefix, request_topic), 0)
                committed = await consumer.committed(partition)
            finally:
                await consumer.stop()
        finally:
            await producer.stop()
        dlq = kafka.make_consumer(integration, group_id=f"d{uuid.uuid4().hex[:6]}", names=[topics.DLQ])
        await dlq.start()
        found: list[DeadLetter] = []
        try:
            async with asyncio.timeout(60):
                while True:
                    got = [r for part in (await dlq.getmany(timeout_ms=1000)).values() for r in part]
                    found += [DeadLetter.model_validate_json(r.value or b"") for r in got]
                    if len(found) >= letters and not got:  # and none after them
                        break
        finally:
            await dlq.stop()
        return found, committed or 0

    before = _runners()
    try:
        found, committed = asyncio.run(scenario())
        return found, committed, _runners() - before
    finally:
        cache.close()


@pytest.mark.stack
def test_a_poison_input_is_dead_lettered_after_the_crashes_allowed_and_the_next_request_runs(
    services: StackConfig, stored: tuple[Engine, ObjectStore], tmp_path: Path
) -> None:
    engine, store = stored
    poison = _tiny_image_job(engine, store, "job-1", white_row=0)
    good = _tiny_image_job(engine, store, "job-2", white_row=1)
    # Both on one partition, the good one behind the poison; they are likely one batch, whose crash
    # is charged to neither: each then runs alone, and only the poison crashes again.
    model = _scripted_model(tmp_path, preprocessing=TINY)
    [letter], committed, left = _serve(services, stored, model, [poison, good], letters=1)
    failed, done = _job(engine, "job-1"), _job(engine, "job-2")
    assert (failed.status, failed.crashes) == ("failed", 3)
    assert failed.error.startswith("TooManyCrashes: its model's runner died 3 times on this job")
    assert (done.status, done.crashes, done.error) == ("done", 0, "")
    results = _results(engine)
    assert results["job-1"].error == failed.error and results["job-1"].findings == []
    assert results["job-2"].error == "" and len(results["job-2"].findings) == 1
    assert letter.error == failed.error and InferenceRequest.model_validate_json(letter.value).job_id == "job-1"
    assert committed == 2  # the partition moved on past both
    assert len(left) == 1  # the runner that answered the good request; the dead ones were reaped


@pytest.mark.stack
def test_a_load_past_the_load_timeout_fails_the_job_the_same_way_and_leaves_no_runner(
    services: StackConfig, stored: tuple[Engine, ObjectStore], tmp_path: Path
) -> None:
    engine, store = stored
    request = _tiny_image_job(engine, store, "job-1", white_row=1)
    model = _scripted_model(tmp_path, load_timeout=1.0, preprocessing=TINY, load_seconds=3600)
    [letter], committed, left = _serve(services, stored, model, [request], letters=1)
    assert left == set()  # each hung runner was killed, not left loading
    job = _job(engine, "job-1")
    assert (job.status, job.crashes) == ("failed", 3)
    assert job.error.startswith("TooManyCrashes: its model's runner died 3 times on this job; the last time: ")
    assert "was still loading the model after 1.0s and was killed" in job.error
    assert _results(engine)["job-1"].error == job.error == letter.error
    assert committed == 1
