"""The inference worker: consumes `inference.request.<model>`, answers through `inference.result`.

Requests that arrive together are prepared concurrently and run as one batch per model version
(when their inputs have the same shape). Each job's outcome, its audit record and its result
event are committed in one transaction (the outbox relay publishes the result), and the offsets
are committed after that; a redelivered request whose job is no longer queued does not run again
(DESIGN.md 5.3). The model version is the one the request names, so jobs queued before an
activation finish on their version.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeAlias

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from numpy.typing import NDArray
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit import log as audit_log
from audit.records import INFERENCE_RUN, AuditRecord, Outcome
from inference import inputs, masks, metrics, text
from inference.adapters import Batch
from inference.config import InferenceSettings
from inference.errors import (
    CannotDecode,
    InferenceError,
    InferenceTimeout,
    InputNotAccepted,
    InputTooLarge,
    ModelCrashed,
    TooManyCrashes,
    UnknownJob,
)
from inference.runners import LoadedModel, ModelCache
from inference.postprocess import contradiction, findings, probabilities
from integration import kafka, topics
from integration.config import IntegrationSettings
from integration.models.manifest import Manifest
from integration.messages import Finding, InferenceRequest, InferenceResult, Measurement
from storage.db import session_scope
from storage.errors import ObjectTooLarge
from storage.objects import ObjectStore
from storage.outbox import add_event
from storage.jobs import count_crash, job_status
from storage.tables.pipeline import InferenceJob

log = logging.getLogger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]


@dataclass(frozen=True)
class Prepared:
    """One request ready to run (`model_input`), or why it cannot run (`error`), or already done (`duplicate`)."""

    request: InferenceRequest
    input_keys: list[str]
    model: LoadedModel | None = None
    model_input: inputs.ModelInput | None = None
    error: str = ""
    # Why the job fails when its request is answered, and the request is dead-lettered too (its
    # model's runner crashed too often loading). `error` fails the job without dead-lettering.
    failure: InferenceError | None = None
    duplicate: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    # When this worker took the request (the end of its queue time, issue 9).
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Said:
    """What a model said about one request."""

    findings: list[Finding] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    output_keys: list[str] = field(default_factory=list)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _rows(batch: Batch) -> int:
    return len(batch)


def _batch_key(item: Prepared) -> tuple[object, ...]:
    assert item.model is not None and item.model_input is not None
    batch = item.model_input.batch
    shape: tuple[object, ...] = ("text",) if isinstance(batch, list) else tuple(batch.shape[1:])
    return (item.model.manifest.name, item.model.manifest.version, *shape)


def _concat(batches: list[Batch]) -> Batch:
    if isinstance(batches[0], list):
        return [t for b in batches if isinstance(b, list) for t in b]
    return np.concatenate([b for b in batches if not isinstance(b, list)])


class Worker:
    """Serves one model name (any of its versions): consumes its request topic, records its results."""

    def __init__(
        self,
        *,
        name: str,
        models: ModelCache,
        objects: ObjectStore,
        engine: Engine,
        producer: AIOKafkaProducer,
        settings: InferenceSettings,
        integration: IntegrationSettings,
    ) -> None:
        self._name = name
        self._models = models
        self._objects = objects
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
            metrics.PARTITIONS.labels(self._name).set(len(consumer.assignment()))
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

        groups: dict[tuple[object, ...], list[int]] = {}
        for i in sorted(prepared):
            if prepared[i].model_input is not None:
                groups.setdefault(_batch_key(prepared[i]), []).append(i)
        outputs: dict[int, tuple[NDArray[np.float32], float]] = {}
        for members in groups.values():
            model = prepared[members[0]].model
            assert model is not None
            batches = [prepared[i].model_input.batch for i in members]  # type: ignore[union-attr]
            metrics.BATCH_SIZE.labels(self._name).observe(len(members))
            if len(members) == 1:
                continue  # alone already: it runs in answer(), where a crash of the runner counts against its job
            try:
                timeout = min(self.time_left(prepared[i]) for i in members)
                raw, seconds = await self.run_model(model, _concat(batches), timeout=timeout)
            except Exception as exc:  # not swallowed: each request runs again alone below, under retry/DLQ
                # A crash here is counted against no job: run alone, the poison input (if one is) crashes
                # again and is charged; its batch-mates, which may be fine, are not.
                log.warning("batch of %d requests failed (%r); running them one by one", len(members), exc)
                continue
            start = 0
            for i, batch in zip(members, batches, strict=True):
                outputs[i] = (raw[start : start + _rows(batch)], seconds)
                start += _rows(batch)

        # In record order, so results of one study (one partition) are recorded in order.
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
        """Load the request's model version and read its inputs; permanent input errors become `error`."""
        taken = datetime.now(UTC)
        status = await asyncio.to_thread(self._job_status, request.job_id)
        if status is None:
            raise UnknownJob(f"job {request.job_id} is not in the database")
        if status != "queued":
            # A redelivered request (a crash before the commit, a rebalance): its result is recorded.
            log.info("job %s is %s already; not running it again", request.job_id, status)
            metrics.JOBS.labels(self._name, "duplicate").inc()
            return Prepared(request=request, input_keys=[], duplicate=True)
        all_keys = [ref.object_key for ref in request.inputs] + [t.ref for t in request.texts]
        started = time.perf_counter()
        try:
            model = await asyncio.to_thread(self._models.get, request.model, request.model_version)
        except ModelCrashed as exc:  # its runner died or hung loading the model for this request
            failure = await self._charge_crash(request.job_id, exc)
            model = await asyncio.to_thread(self._models.model, request.model, request.model_version)
            timings = {"load": time.perf_counter() - started}
            return Prepared(
                request=request, input_keys=all_keys, model=model, failure=failure, timings=timings, started_at=taken
            )
        timings = {"load": time.perf_counter() - started}
        fetched = 0.0
        budget = self._settings.inference_timeout_seconds
        started = time.perf_counter()

        def fetch(key: str) -> bytes:
            nonlocal fetched
            if time.perf_counter() - started > budget:  # the preparation was abandoned: read no more
                raise InferenceTimeout(f"preparing the inputs took over {budget}s")
            began = time.perf_counter()
            try:
                # StorageUnavailable: retried; an object over the bound fails the job.
                return self._objects.get_bytes(key, max_bytes=self._settings.inference_max_object_bytes)
            except ObjectTooLarge as exc:
                raise InputTooLarge(f"{exc} (inference_max_object_bytes)") from exc
            finally:
                fetched += time.perf_counter() - began

        def spent() -> dict[str, float]:
            return {"fetch": fetched, "preprocess": time.perf_counter() - started - fetched}

        prepare = asyncio.to_thread(
            inputs.model_input, request, model.manifest, fetch, max_text_chars=self._settings.inference_max_text_chars
        )
        try:
            # The job's timeout covers its preparation too. A thread cannot be killed: past the
            # timeout it is abandoned (its next fetch stops it, and what it parses is bounded by
            # inference_max_object_bytes and inference_max_text_chars), and the job fails now.
            model_input = await asyncio.wait_for(prepare, timeout=budget)
        except (InputNotAccepted, CannotDecode) as exc:
            timings.update(spent())
            return Prepared(request=request, input_keys=all_keys, model=model, error=_describe(exc), timings=timings, started_at=taken)
        except (TimeoutError, InferenceTimeout, InputTooLarge) as exc:
            timings.update(spent())
            failed = exc if isinstance(exc, InferenceError) else InferenceTimeout(f"preparing the inputs took over {budget}s")
            return Prepared(
                request=request, input_keys=all_keys, model=model, failure=failed, timings=timings, started_at=taken
            )
        timings.update(spent())
        if model_input.problems:
            log.warning("job %s: skipped %d unusable inputs: %s", request.job_id, len(model_input.problems), "; ".join(model_input.problems))
        return Prepared(
            request=request, input_keys=model_input.input_keys, model=model, model_input=model_input, timings=timings,
            started_at=taken,
        )

    def time_left(self, item: Prepared) -> float:
        """Seconds of the job's timeout its preparation left for running the model and postprocessing."""
        used = item.timings.get("fetch", 0.0) + item.timings.get("preprocess", 0.0)
        return self._settings.inference_timeout_seconds - used

    async def run_model(
        self, model: LoadedModel, batch: Batch, *, timeout: float | None = None
    ) -> tuple[NDArray[np.float32], float]:
        """Raw outputs for a batch from the model's runner process, awaited in a thread so the event
        loop keeps serving Kafka; with its duration.

        Past `timeout` (default: the whole job's) the runner is killed (InferenceTimeout) and the
        next job starts a new one.
        """
        if timeout is None:
            timeout = self._settings.inference_timeout_seconds
        if timeout <= 0:
            raise InferenceTimeout(f"the job's {self._settings.inference_timeout_seconds}s were used before the model ran")
        # A runner killed since the job was prepared starts again under the load timeout, not the job's.
        await asyncio.to_thread(model.load)
        started = time.perf_counter()
        raw = await asyncio.to_thread(model.predict, batch, timeout=timeout)
        seconds = time.perf_counter() - started
        metrics.INFERENCE_SECONDS.labels(self._name).observe(seconds)
        if len(raw) != len(batch):
            raise InferenceError(f"model gave outputs of shape {raw.shape} for {len(batch)} inputs")
        return raw, seconds

    async def answer(self, item: Prepared, output: tuple[NDArray[np.float32], float] | None) -> None:
        """Record the job's outcome, its audit record and its result in one transaction.

        `output` is the request's share of the batch's raw outputs and the batch's seconds; without
        it (the batch failed) the request runs alone here. A model that fails or runs past the
        timeout fails the job with an error result, and the request is dead-lettered as well. A
        runner that died (ModelCrashed, retriable) leaves the job queued: the request is retried,
        until the job has seen `inference_max_crashes` crashes; then it fails the same way.
        """
        if item.duplicate:
            return
        failure = item.failure
        said = Said()
        timings = dict(item.timings)
        if item.model_input is not None and item.model is not None:
            left = self.time_left(item)
            try:
                raw, timings["inference"] = (
                    output
                    if output is not None
                    else await self.run_model(item.model, item.model_input.batch, timeout=left)
                )
                left -= timings["inference"]
                started = time.perf_counter()
                said = await self._postprocessed(item, item.model, item.model_input, raw, timeout=left)
                timings["postprocess"] = time.perf_counter() - started
            except ModelCrashed as exc:
                failure = await self._charge_crash(item.request.job_id, exc)
            except InferenceError as exc:
                if exc.retriable:
                    raise
                failure = exc
        if failure is not None:
            item = replace(item, error=_describe(failure))
        manifest = item.model.manifest if item.model is not None else None
        if manifest is None:
            raise InferenceError("no model for the request")
        result = self._result(item, manifest, said, timings)
        await asyncio.to_thread(self._record, item, manifest, result)
        metrics.JOBS.labels(self._name, "failed" if item.error else "done").inc()
        log.info(
            "job %s (correlation %s): %s in %s",
            item.request.job_id,
            item.request.correlation_id,
            item.error or "done",
            {k: round(v, 3) for k, v in timings.items()},
        )
        if failure is not None:
            raise failure  # after the error result is recorded: to the dead-letter topic, for a replay

    async def _charge_crash(self, job_id: str, crash: ModelCrashed) -> TooManyCrashes:
        """Count a death of the model's runner against the job: `crash` is raised again (and retried)
        until the job has seen `inference_max_crashes`, then the job's permanent failure is returned.

        Only runs of this job's request alone reach here (running it, or loading the model for it):
        handle_batch runs a batch that crashed again one request at a time, so a poison input does
        not use up the tries of the requests batched with it.
        """
        crashes = await asyncio.to_thread(self._count_crash, job_id)
        allowed = self._settings.inference_max_crashes
        log.warning("job %s: its model's runner died, crash %d of %d allowed: %s", job_id, crashes, allowed, crash)
        if crashes < allowed:
            raise crash
        return TooManyCrashes(f"its model's runner died {crashes} times on this job; the last time: {crash}")

    async def _postprocessed(
        self,
        item: Prepared,
        model: LoadedModel,
        model_input: inputs.ModelInput,
        raw: NDArray[np.float32],
        *,
        timeout: float,
    ) -> Said:
        """What the model said, within what is left of the job's timeout (InferenceTimeout past it)."""
        if timeout <= 0:
            raise InferenceTimeout(f"the job's {self._settings.inference_timeout_seconds}s were used before postprocessing")
        try:
            return await asyncio.wait_for(self._postprocess(item, model, model_input, raw, timeout=timeout), timeout)
        except TimeoutError:
            raise InferenceTimeout(
                f"running and postprocessing took over the job's {self._settings.inference_timeout_seconds}s"
            ) from None

    async def _postprocess(
        self, item: Prepared, model: LoadedModel, model_input: inputs.ModelInput, raw: NDArray[np.float32], *, timeout: float
    ) -> Said:
        manifest = model.manifest
        task = manifest.task
        if task == "text-classification":
            anchors = await asyncio.to_thread(model.anchors, timeout=timeout)
            clause_texts = model_input.batch if isinstance(model_input.batch, list) else []
            return Said(findings=findings(manifest, text.scores(manifest, clause_texts, raw, anchors)[np.newaxis]))
        if task in ("segmentation", "measurement"):
            measured, keys = await asyncio.to_thread(masks.store, self._objects, item.request, manifest, model_input, raw)
            return Said(measurements=measured, output_keys=keys)
        probs = probabilities(raw, manifest.activation)
        found = findings(manifest, probs)
        checked = contradiction(manifest, probs, model_input.attribute_value)
        return Said(findings=found + ([checked] if checked is not None else []))

    def _result(self, item: Prepared, manifest: Manifest, said: Said, timings: dict[str, float]) -> InferenceResult:
        request = item.request
        return InferenceResult(
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
            findings=said.findings,
            measurements=said.measurements,
            output_keys=said.output_keys,
            focus=[t.ref for t in request.texts],
            clinical_use=manifest.clinical_use,
            error=item.error,
            timings=timings,
            last_received_at=request.last_received_at,
            ready_at=request.ready_at,
            started_at=item.started_at,
            finished_at=datetime.now(UTC),
        )

    def _job_status(self, job_id: str) -> str | None:
        with session_scope(self._engine) as session:
            return job_status(session, job_id=job_id)

    def _count_crash(self, job_id: str) -> int:
        with session_scope(self._engine) as session:
            crashes = count_crash(session, job_id=job_id)
        if crashes is None:
            raise UnknownJob(f"job {job_id} is not in the database")
        return crashes

    def _record(self, item: Prepared, manifest: Manifest, result: InferenceResult) -> None:
        with session_scope(self._engine) as session:
            record_outcome(session, manifest=manifest, item=item, result=result)

    async def _handle(self, record: Record, handler: kafka.Handler, *, stop: asyncio.Event) -> None:
        # integration.kafka's per-record step: retry retriable errors with backoff, dead-letter the rest.
        async def counted(rec: Record) -> None:
            try:
                await handler(rec)
            except Exception as exc:
                if not getattr(exc, "retriable", False):
                    metrics.JOBS.labels(self._name, "dead-lettered").inc()
                raise

        await kafka.handle_record(record, self._producer, self._integration, handler=counted, stop=stop)


def record_outcome(
    session: Session, *, manifest: Manifest, item: Prepared, result: InferenceResult | None = None
) -> InferenceJob | None:
    """Mark the job done or failed, append its audit record and queue its result, in the caller's transaction.

    Returns None, writing nothing, when the job was finished already (a retried answer).
    """
    request = item.request
    job = session.get(InferenceJob, request.job_id)
    if job is None:
        raise UnknownJob(f"job {request.job_id} is not in the database")
    if job.status != "queued":
        return None
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
    if result is not None:
        add_event(session, topic=topics.INFERENCE_RESULT, key=request.study_uid, message=result)
    return job
