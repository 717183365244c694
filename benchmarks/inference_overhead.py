"""Inference worker overhead for the chest X-ray model: images per second through the worker against
the model called directly, in the same run.

Starts the local stack in a temporary directory (rclone S3, Tansu, the engine with the chest
worker), indexes N studies whose one instance is the real CR radiograph RG1_UNCR.dcm (one stored
object shared by all, so upload time stays out of it), publishes their N inference requests on
Kafka at once and times until the N results are on the result topic. The worker fetches,
preprocesses, micro-batches, runs the model, records each job with its audit record and result in
one transaction, and the outbox relay publishes the result: that whole path is what is measured.
The reference is the same model called directly on batches of the same size made of the same
preprocessed image, measured before the stack starts and again after it stopped (the machine is
shared, so the two bracket the worker run; their mean is the reference).

    .venv/bin/python benchmarks/inference_overhead.py --requests 48 --batch-size 8
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from integration import kafka, topics  # noqa: E402
from integration.messages import InferenceRequest, InferenceResult, InstanceRef  # noqa: E402
from doctorai.stack import (
    StackConfig,
    free_ports,
    prepare_database,
    start_broker,
    start_engine,
    start_object_store,
)
from doctorai.supervisor import Supervisor
from storage.db import make_engine, session_scope  # noqa: E402
from storage.objects import dicom_key, make_object_store  # noqa: E402
from storage.instances import ReceivedInstance, correlation_id_for_study, record_instance  # noqa: E402
from storage.jobs import create_job  # noqa: E402

MODEL = "chest-xray-pneumonia"
VERSION = "0.3.0"


def index_studies(config: StackConfig, source: Path, count: int) -> list[InferenceRequest]:
    """Store the image once, index `count` studies pointing at it, create their jobs; their requests."""
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    key = dicom_key(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    make_object_store(config.storage_settings()).put_file(key, source)
    engine = make_engine(config.storage_settings().resolved_database_url())
    requests = []
    with session_scope(engine) as session:
        for n in range(count):
            study = f"2.25.{uuid.uuid4().int}"
            item = ReceivedInstance(
                study_uid=study, series_uid=study + ".1", sop_uid=study + ".1.1", sop_class_uid=str(ds.SOPClassUID),
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID), patient_id=f"BENCH{n}", accession_number="",
                study_date="", study_description="", modality="CR", body_part="CHEST", series_number=1,
                series_description="", instance_number=1, object_key=key, size=source.stat().st_size, sha256="0" * 64,
                calling_ae="BENCH", source_address="",
            )
            record_instance(session, item=item)
            job = create_job(session, job_id=str(uuid.uuid4()), study_uid=study, revision=1, model=MODEL, model_version=VERSION)
            assert job is not None
            requests.append(
                InferenceRequest(
                    correlation_id=correlation_id_for_study(study), job_id=job.job_id, study_uid=study, revision=1,
                    model=MODEL, model_version=VERSION, patient_id=f"BENCH{n}",
                    inputs=[InstanceRef(series_uid=item.series_uid, sop_uid=item.sop_uid, sop_class_uid=item.sop_class_uid,
                                        modality="CR", body_part="CHEST", object_key=key)],
                    last_received_at=datetime.now(UTC),
                )
            )
    engine.dispose()
    return requests


async def through_worker(config: StackConfig, requests: list[InferenceRequest]) -> float:
    """Seconds from publishing every request to the last of their results on the result topic."""
    settings = config.integration_settings()
    result_topic = topics.qualified(settings.topic_prefix, topics.INFERENCE_RESULT)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    producer = kafka.make_producer(settings)
    await consumer.start()
    await producer.start()
    try:
        partitions = [TopicPartition(result_topic, p) for p in consumer.partitions_for_topic(result_topic) or []]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for p in partitions:
            await consumer.position(p)  # resolve the end offsets now, before anything is sent
        waiting = {r.job_id for r in requests}
        started = time.perf_counter()
        await asyncio.gather(
            *(kafka.publish(producer, settings, topic=topics.inference_request(MODEL), key=r.study_uid, message=r)
              for r in requests)
        )
        while waiting:
            got = await consumer.getmany(timeout_ms=1000)
            for records in got.values():
                for record in records:
                    result = InferenceResult.model_validate_json(record.value or b"")
                    if result.error:
                        raise SystemExit(f"job {result.job_id} failed: {result.error}")
                    waiting.discard(result.job_id)
            if time.perf_counter() - started > 600:
                raise SystemExit(f"{len(waiting)} results missing after 600 s")
        return time.perf_counter() - started
    finally:
        await producer.stop()
        await consumer.stop()


def direct(source: Path, count: int, batch_size: int) -> float:
    """Seconds for the model alone on `count` copies of the preprocessed image, in batches of `batch_size`."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from inference.adapters import keras as adapter
    from inference.packages import lookup
    from inference.preprocess import prepare

    manifest, artifact = lookup(MODEL)
    model = adapter.load(artifact)
    image = prepare(source.read_bytes(), manifest)
    batch = np.stack([image] * batch_size)
    adapter.predict(model, batch)  # warm up
    started = time.perf_counter()
    done = 0
    while done < count:
        adapter.predict(model, batch[: min(batch_size, count - done)])
        done += batch_size
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    source = Path(str(get_testdata_file("RG1_UNCR.dcm")))
    before = direct(source, args.requests, args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        config = StackConfig(
            var_dir=Path(tmp) / "var",
            ports=free_ports(),
            models=(MODEL,),
            extra_env={"DOCTORAI_INFERENCE_BATCH_SIZE": str(args.batch_size)},
        )
        supervisor = Supervisor(config.var_dir / "logs")
        try:
            prepare_database(config)
            start_object_store(config, supervisor)
            start_broker(config, supervisor)
            start_engine(config, supervisor)
            requests = index_studies(config, source, args.requests)
            worker_seconds = asyncio.run(through_worker(config, requests))
        finally:
            supervisor.stop_all()
    after = direct(source, args.requests, args.batch_size)
    direct_seconds = (before + after) / 2
    through = args.requests / worker_seconds
    alone = args.requests / direct_seconds
    print(f"requests: {args.requests}, batch size: {args.batch_size} (micro-batch wait 0.05 s), one CR image each")
    print(f"through the worker (request on Kafka -> result on Kafka): {through:.2f} images/s ({worker_seconds:.1f} s)")
    print(
        f"model alone on the same preprocessed batches, this process: {alone:.2f} images/s "
        f"(before {before:.1f} s, after {after:.1f} s)"
    )
    print(f"ratio worker / model alone: {through / alone:.2f}")


if __name__ == "__main__":
    main()
