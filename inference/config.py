"""Settings for the inference workers (env prefix DOCTORAI_)."""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class InferenceSettings(BaseSettings):
    """Which model a worker serves and how it batches."""

    model_config = SettingsConfigDict(env_prefix="DOCTORAI_", extra="ignore")

    inference_model: str = "chest-xray-pneumonia"
    # Requests that arrive together run as one batch: at most this many, collected for at most
    # this long after the first one, so a lone study is not held back.
    inference_batch_size: int = 8
    inference_batch_wait_seconds: float = 0.05
    # Metrics port of `python -m inference`; 0 turns it off.
    inference_metrics_port: int = 9104
    # A job that takes longer than this is abandoned: its model's runner process is killed, its job
    # fails, its result says why, and the request is dead-lettered. The next job starts a new runner.
    # It covers all of a job's work after its model is loaded: reading and preparing its inputs,
    # running the model and postprocessing its outputs (a text or an object that takes too long to
    # prepare would otherwise hold a worker outside any bound, issue 18).
    inference_timeout_seconds: float = 120.0
    # The report texts of one request together, in characters: more is refused (the job fails
    # saying so) rather than split and embedded clause by clause. Radiology reports are a few KB.
    inference_max_text_chars: int = Field(default=200_000, ge=1)
    # One input object (a DICOM instance) read from object storage, in bytes: a larger one fails
    # its job with a reason (and is dead-lettered) instead of being read whole into memory.
    inference_max_object_bytes: int = Field(default=1 << 30, ge=1)
    # A runner still loading its model after this long is killed; that counts as a crash of the job
    # that needed the model (a hung load would otherwise hold the worker forever).
    inference_load_timeout_seconds: float = 600.0
    # A job whose model runner died this many times running it alone (or loading for it) fails, its
    # result says why, and the request is dead-lettered: a poison input (a decoder crash, one volume
    # too large for memory) would otherwise be retried forever and hold up its partition. Counted in
    # the job's row, so a restarted worker goes on counting.
    inference_max_crashes: int = Field(default=3, ge=1)
    # Each loaded model version runs in a runner process of its own; when their resident memory
    # together exceeds this, the least recently used runners are stopped (the one just asked for
    # always stays).
    inference_memory_budget_mb: float = 4096.0
    # Local copies of model packages fetched from object storage; empty: <var_dir>/model-cache.
    inference_cache_dir: str = ""


@lru_cache
def get_settings() -> InferenceSettings:
    """The process's inference settings, read once from the environment."""
    return InferenceSettings()
