"""The worker's model holder on the real chest model, and its job + audit transaction on SQLite."""

import asyncio
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

os.environ.setdefault("KERAS_BACKEND", "torch")

from audit.log import trail  # noqa: E402
from audit.records import INFERENCE_RUN, Outcome  # noqa: E402
from inference import preprocess, registry  # noqa: E402
from inference.models import LoadedModel, ModelCache  # noqa: E402
from inference.packages import lookup  # noqa: E402
from inference.config import InferenceSettings  # noqa: E402
from inference.errors import InferenceTimeout, ModelCrashed, UnknownJob  # noqa: E402
from inference.inputs import ModelInput  # noqa: E402
from inference.postprocess import findings, probabilities  # noqa: E402
from inference.worker import Prepared, Worker, record_outcome  # noqa: E402
from integration.config import IntegrationSettings  # noqa: E402
from integration.messages import InferenceRequest, InferenceResult, InstanceRef  # noqa: E402
from sqlalchemy import Engine, select  # noqa: E402
from storage.config import StorageSettings  # noqa: E402
from storage.db import make_engine, migrate, session_scope  # noqa: E402
from storage.objects import dicom_key, make_object_store  # noqa: E402
from storage.queries import ReceivedInstance, correlation_id_for_study, create_job, record_instance  # noqa: E402
from storage.tables import AuditEvent, InferenceJob, OutboxEvent  # noqa: E402
from tests.conftest import process_ended  # noqa: E402

RG1 = Path(str(get_testdata_file("RG1_UNCR.dcm")))


def test_real_chest_model_gives_two_probabilities() -> None:
    manifest, artifact = lookup("chest-xray-pneumonia")
    model = LoadedModel(manifest, artifact, registry.adapter_module(manifest.framework))
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
    item = ReceivedInstance(
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
        series_description="",
        instance_number=None,
        object_key=key,
        size=RG1.stat().st_size,
        sha256="0" * 64,
        calling_ae="TEST",
        source_address="127.0.0.1",
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


def _study_with_job(tmp_path: Path, *, status: str = "queued") -> tuple[Engine, InferenceRequest]:
    """A SQLite database holding RG1's study and one job on it."""
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    migrate(url)
    engine = make_engine(url)
    ds = dcmread(RG1, stop_before_pixels=True)
    study_uid, series_uid, sop_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    key = dicom_key(study_uid, series_uid, sop_uid)
    item = ReceivedInstance(
        study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid, sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid="1.2.840.10008.1.2.1", patient_id="P", accession_number="", study_date="",
        study_description="", modality="CR", body_part="CHEST", series_number=None, series_description="",
        instance_number=None, object_key=key, size=1, sha256="0" * 64, calling_ae="T", source_address="",
    )
    with session_scope(engine) as session:
        record_instance(session, item=item)
        job = create_job(session, job_id="job-1", study_uid=study_uid, revision=1, model="slow", model_version="1")
        assert job is not None
        job.status = status
    ref = InstanceRef(series_uid=series_uid, sop_uid=sop_uid, sop_class_uid=item.sop_class_uid, object_key=key)
    return engine, _request("job-1", study_uid, ref).model_copy(update={"model": "slow", "model_version": "1"})


def _worker(engine: Engine, cache: ModelCache, timeout: float = 120.0) -> Worker:
    return Worker(
        name="slow",
        models=cache,
        store=make_object_store(StorageSettings()),  # never reached by these tests
        engine=engine,
        producer=None,  # type: ignore[arg-type]  # only the dead-letter path (not run here) publishes
        settings=InferenceSettings(inference_timeout_seconds=timeout),
        integration=IntegrationSettings(),
    )


def _scripted_worker(tmp_path: Path, timeout: float = 120.0) -> tuple[Engine, InferenceRequest, LoadedModel, Worker]:
    """A queued job, and a worker whose model's inputs say how long it takes or whether its runner
    dies (fault injection: tests/inference/scripted_adapter.py)."""
    engine, request = _study_with_job(tmp_path)
    manifest, _ = lookup("chest-xray-pneumonia")
    script = tmp_path / "script.json"
    script.write_text("{}")
    model = LoadedModel(
        manifest.model_copy(update={"name": "slow", "version": "1"}), script, "tests.inference.scripted_adapter"
    )
    return engine, request, model, _worker(engine, ModelCache(lambda n, v: model, budget_bytes=1e9), timeout)


def _item(request: InferenceRequest, model: LoadedModel, *, seconds: float = 0.0, crash: bool = False) -> Prepared:
    batch = np.zeros((1, 150, 150, 3), dtype=np.float32)
    batch.flat[:2] = (seconds, 1.0 if crash else 0.0)
    return Prepared(
        request=request, input_keys=["k"], model=model, model_input=ModelInput(batch=batch, input_keys=["k"])
    )


def _status(engine: Engine, job_id: str) -> str:
    with session_scope(engine) as session:
        job = session.get(InferenceJob, job_id)
        assert job is not None
        return job.status


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
