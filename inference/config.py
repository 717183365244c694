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
    inference_timeout_seconds: float = 120.0
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
