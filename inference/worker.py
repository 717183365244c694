"""The inference worker: Kafka requests in, micro-batched model runs, job + audit rows, results out.

Per batch of records: prepare each request (fetch its instances, check and preprocess them), run
every prepared image through the model in one call, then per request, in record order, commit the
job row and its audit record in one transaction and publish the InferenceResult. Offsets are
committed only after every record of the batch was handled. Each record goes through
`integration.kafka`'s retry/dead-letter step: retriable errors (storage, broker) back off and
retry, other unexpected errors dead-letter the record; inputs the model cannot use
(InputNotAccepted, CannotDecode) are answered with an InferenceResult that carries the error.
"""

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeAlias

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from numpy.typing import NDArray
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit import log as audit_log
from audit.records import INFERENCE_RUN, AuditRecord, Outcome
from inference import metrics
from inference.adapters import Adapter
from inference.config import InferenceSettings
from inference.errors import CannotDecode, InferenceError, InferenceTimeout, InputNotAccepted, UnknownJob
from inference.manifest import Manifest, accepts
from inference.postprocess import findings, probabilities
from inference.preprocess import prepare
from integration import kafka, topics
from integration.config import IntegrationSettings
from integration.messages import Finding, InferenceRequest, InferenceResult
from storage.db import session_scope
from storage.objects import ObjectStore
from storage.tables import InferenceJob

log = logging.getLogger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]


class LoadedModel:
    """A model package's artifact, loaded on first use and kept for the life of the process."""

    def __init__(self, manifest: Manifest, artifact: Path, adapter: Adapter) -> None:
        self.manifest = manifest
        self._artifact = artifact
        self._adapter = adapter
        self._model: object | None = None
        self._lock = threading.Lock()

    def load(self) -> object:
        """The loaded model; the first call loads it (blocking: call it from a thread)."""
        with self._lock:
            if self._model is None:
                started = time.perf_counter()
                self._model = self._adapter.load(self._artifact)
                log.info(
                    "loaded %s %s from %s in %.1fs",
                    self.manifest.name,
                    self.manifest.version,
                    self._artifact.name,
                    time.perf_counter() - started,
                )
            return self._model

    def predict(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """Raw model outputs for a batch (blocking: call it from a thread)."""
        return self._adapter.predict(self.load(), batch)


@dataclass(frozen=True)
class Prepared:
    """One request ready to run (`images`), or the reason it cannot run (`error`)."""

    request: InferenceRequest
    input_keys: list[str]
    images: NDArray[np.float32] | None = None
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)


class Worker:
    """Serves one model: consumes its request topic, answers on the result topic."""

    def __init__(
        self,
        *,
        model: LoadedModel,
        store: ObjectStore,
        engine: Engine,
        producer: AIOKafkaProducer,
        settings: InferenceSettings,
        integration: IntegrationSettings,
    ) -> None:
        self._model = model
        self._manifest = model.manifest
        self._store = store
        self._engine = engine
        self._producer = producer
        self._settings = settings
        self._integration = integration

    async def run(self, consumer: AIOKafkaConsumer, *, stop: asyncio.Event) -> None:
        """Handle micro-batches of requests until `stop`, committing offsets after each batch."""
        size = max(self._settings.inference_batch_size, 1)
        wait_ms = int(self._settings.inference_batch_wait_seconds * 1000)
        while not stop.is_set():
            got = await consumer.getmany(timeout_ms=500, max_records=size)
            records = [r for part in got.values() for r in part]
            if not records:
                continue
            if len(records) < size and wait_ms > 0:
                # Requests that arrive together run together; a lone one waits at most wait_ms.
                more = await consumer.getmany(timeout_ms=wait_ms, max_records=size - len(records))
                records.extend(r for part in more.values() for r in part)
            try:
                await self.handle_batch(records, stop=stop)
            except asyncio.CancelledError:
                if stop.is_set():
                    log.info("stopped during a batch; its %d records will be redelivered", len(records))
                    return
                raise
            await kafka.commit(consumer)

    async def handle_batch(self, records: list[Record], *, stop: asyncio.Event) -> None:
        """Prepare, run and answer every record; returns once each is answered or dead-lettered."""
        prepared: dict[int, Prepared] = {}
        results = await asyncio.gather(
            *(self._handle(r, self._preparing(prepared, i), stop=stop) for i, r in enumerate(records)),
            return_exceptions=True,
        )
        for outcome in results:
            if isinstance(outcome, BaseException):  # e.g. stopped mid-retry: the batch is not committed
                raise outcome

        runnable = [i for i in sorted(prepared) if prepared[i].images is not None]
        outputs: dict[int, tuple[NDArray[np.float32], float]] = {}
        if runnable:
            metrics.BATCH_SIZE.labels(self._manifest.name).observe(len(runnable))
            batch = np.concatenate([_images(prepared[i]) for i in runnable])
            try:
                raw, seconds = await self.run_model(batch)
            except Exception as exc:  # not swallowed: each request runs again alone below, under retry/DLQ
                log.warning("batch of %d requests failed (%r); running them one by one", len(runnable), exc)
            else:
                start = 0
                for i in runnable:
                    count = len(_images(prepared[i]))
                    outputs[i] = (raw[start : start + count], seconds)
                    start += count

        # In record order, so results of one study (one partition) are published in order.
        for i in sorted(prepared):
            await self._handle(records[i], self._answering(prepared[i], outputs.get(i)), stop=stop)

    def _preparing(self, into: dict[int, Prepared], i: int) -> kafka.Handler:
        async def handler(record: Record) -> None:
            request = InferenceRequest.model_validate_json(record.value or b"")
            into[i] = await self.prepare_request(request)

        return handler

    def _answering(self, item: Prepared, output: tuple[NDArray[np.float32], float] | None) -> kafka.Handler:
        async def handler(_record: Record) -> None:
            await self.answer(item, output)

        return handler

    async def prepare_request(self, request: InferenceRequest) -> Prepared:
        """Fetch and preprocess the accepted inputs of one request; permanent input errors become `error`."""
        manifest = self._manifest
        candidates = [
            ref for ref in request.inputs if accepts(manifest, ref.modality, ref.body_part, ref.sop_class_uid)
        ]
        all_keys = [ref.object_key for ref in request.inputs]
        if not candidates:
            wanted = f"modalities {manifest.accepts.modalities}, body parts {manifest.accepts.body_parts}"
            error = InputNotAccepted(f"none of the {len(request.inputs)} inputs matches {manifest.name} ({wanted})")
            return Prepared(request=request, input_keys=all_keys, error=_describe(error))
        images: list[NDArray[np.float32]] = []
        keys: list[str] = []
        problems: list[str] = []
        fetch = preprocess = 0.0
        for ref in candidates:
            started = time.perf_counter()
            data = await asyncio.to_thread(self._store.get_bytes, ref.object_key)  # StorageUnavailable: retried
            fetch += time.perf_counter() - started
            started = time.perf_counter()
            try:
                images.append(await asyncio.to_thread(prepare, data, manifest))
                keys.append(ref.object_key)
            except (InputNotAccepted, CannotDecode) as exc:
                # One unreadable instance does not sink the study: the others still answer.
                problems.append(f"{ref.object_key}: {_describe(exc)}")
            finally:
                preprocess += time.perf_counter() - started
        timings = {"fetch": fetch, "preprocess": preprocess}
        if not images:
            return Prepared(request=request, input_keys=all_keys, error="; ".join(problems), timings=timings)
        if problems:
            log.warning("job %s: skipped %d unusable inputs: %s", request.job_id, len(problems), "; ".join(problems))
        return Prepared(request=request, input_keys=keys, images=np.stack(images), timings=timings)

    async def run_model(self, batch: NDArray[np.float32]) -> tuple[NDArray[np.float32], float]:
        """Raw outputs for a batch, run in a thread so the event loop keeps serving Kafka; with its duration."""
        started = time.perf_counter()
        try:
            raw = await asyncio.wait_for(
                asyncio.to_thread(self._model.predict, batch), timeout=self._settings.inference_timeout_seconds
            )
        except TimeoutError:
            raise InferenceTimeout(
                f"{self._manifest.name} took over {self._settings.inference_timeout_seconds}s for {len(batch)} images"
            ) from None
        seconds = time.perf_counter() - started
        metrics.INFERENCE_SECONDS.labels(self._manifest.name).observe(seconds)
        if raw.ndim != 2 or len(raw) != len(batch):
            raise InferenceError(f"model gave outputs of shape {raw.shape} for {len(batch)} images")
        return raw, seconds

    async def answer(self, item: Prepared, output: tuple[NDArray[np.float32], float] | None) -> None:
        """Record the job's outcome with its audit record in one transaction, then publish the result.

        `output` is the request's share of the batch's raw outputs and the batch's seconds; without
        it (the batch failed) the request runs alone here.
        """
        found: list[Finding] = []
        timings = dict(item.timings)
        if item.images is not None:
            raw, timings["inference"] = output if output is not None else await self.run_model(item.images)
            found = findings(self._manifest, probabilities(raw, self._manifest.activation))
        await asyncio.to_thread(self._record, item)
        request, manifest = item.request, self._manifest
        result = InferenceResult(
            correlation_id=request.correlation_id,
            job_id=request.job_id,
            study_uid=request.study_uid,
            revision=request.revision,
            model=manifest.name,
            model_version=manifest.version,
            patient_id=request.patient_id,
            input_keys=item.input_keys,
            report_code=manifest.report_code,
            report_category=manifest.report_category,
            findings=found,
            clinical_use=manifest.clinical_use,
            error=item.error,
            timings=timings,
            last_received_at=request.last_received_at,
        )
        await kafka.publish(
            self._producer, self._integration, topic=topics.INFERENCE_RESULT, key=request.study_uid, message=result
        )
        metrics.JOBS.labels(manifest.name, "failed" if item.error else "done").inc()
        log.info(
            "job %s (correlation %s): %s in %s",
            request.job_id,
            request.correlation_id,
            item.error or "done",
            {k: round(v, 3) for k, v in timings.items()},
        )

    def _record(self, item: Prepared) -> None:
        with session_scope(self._engine) as session:
            record_outcome(session, manifest=self._manifest, item=item)

    async def _handle(self, record: Record, handler: kafka.Handler, *, stop: asyncio.Event) -> None:
        # integration.kafka's per-record step: retry retriable errors with backoff, dead-letter the rest.
        async def counted(rec: Record) -> None:
            try:
                await handler(rec)
            except Exception as exc:
                if not getattr(exc, "retriable", False):
                    metrics.JOBS.labels(self._manifest.name, "dead-lettered").inc()
                raise

        await kafka.handle_record(record, self._producer, self._integration, handler=counted, stop=stop)


def _images(item: Prepared) -> NDArray[np.float32]:
    assert item.images is not None
    return item.images


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def record_outcome(session: Session, *, manifest: Manifest, item: Prepared) -> InferenceJob:
    """Mark the request's job done or failed and append its audit record, in the caller's transaction."""
    request = item.request
    if request.model_version != manifest.version:
        log.warning(
            "job %s asked for version %s; this worker runs %s", request.job_id, request.model_version, manifest.version
        )
    job = session.get(InferenceJob, request.job_id)
    if job is None:
        raise UnknownJob(f"job {request.job_id} is not in the database")
    job.status = "failed" if item.error else "done"
    job.error = item.error
    job.finished_at = datetime.now(UTC)
    detail = {
        "job_id": request.job_id,
        "model": manifest.name,
        "version": manifest.version,
        "revision": str(request.revision),
        "input_keys": " ".join(item.input_keys),
        "outcome": job.status,
    }
    if item.error:
        detail["error"] = item.error
    audit_log.append(
        session,
        AuditRecord(
            hop=INFERENCE_RUN,
            correlation_id=request.correlation_id,
            agent_who=f"model:{manifest.name}:{manifest.version}",
            entity_what=request.study_uid,
            outcome=Outcome.MINOR_FAILURE if item.error else Outcome.SUCCESS,
            detail=detail,
        ),
    )
    return job
