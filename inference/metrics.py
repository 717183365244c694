"""Prometheus metrics of the inference workers."""

from prometheus_client import Counter, Gauge, Histogram

JOBS = Counter(
    "doctorai_inference_jobs_total",
    "Inference requests handled, by outcome (done, failed: result with an error, dead-lettered, duplicate).",
    ["model", "outcome"],
)
INFERENCE_SECONDS = Histogram(
    "doctorai_inference_seconds",
    "Time the model took for one batch.",
    ["model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
BATCH_SIZE = Histogram(
    "doctorai_inference_batch_size",
    "Requests run together in one batch.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
PARTITIONS = Gauge(
    "doctorai_inference_assigned_partitions",
    "Partitions of the request topic this worker owns now (workers of one model share them).",
    ["model"],
)
LOADED_MODELS = Gauge(
    "doctorai_inference_loaded_models",
    "Model versions this worker holds in memory.",
    ["model"],
)
MODEL_RESIDENT_BYTES = Gauge(
    "doctorai_inference_model_resident_bytes",
    "Resident memory of this worker's model runner processes together: what the memory budget counts.",
    ["model"],
)
