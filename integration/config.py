"""Settings for Kafka and the pipeline (env prefix DOCTORAI_)."""

from functools import lru_cache
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class Hl7Identity(BaseSettings):
    """MSH-3/MSH-4 of every HL7 v2 message this engine sends: the listener's ACKs and the ORU^R01 results."""

    model_config = SettingsConfigDict(env_prefix="DOCTORAI_", extra="ignore")

    hl7_application: str = "DOCTORAI"
    hl7_facility: str = "DOCTORAI"


class IntegrationSettings(Hl7Identity):
    """Where Kafka is and how events flow through it."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    # Every topic name is prefixed, so several deployments can share one cluster.
    topic_prefix: str = "doctorai."
    topic_partitions: int = 3
    relay_batch_size: int = 200
    relay_poll_seconds: float = 0.2
    # Retriable handler errors back off from the first delay, doubling up to the maximum.
    retry_first_delay_seconds: float = 0.5
    retry_max_delay_seconds: float = 30.0
    # Metrics (and health) port of `python -m integration`; 0 turns it off.
    integration_metrics_port: int = 9102
    # Metrics port of `doctorai up`'s supervisor (doctorai_process_restarts_total); 0 turns it off.
    supervisor_metrics_port: int = 9111
    # Address every background process's metrics port binds to: loopback on one machine,
    # 0.0.0.0 in containers so Prometheus and the kubelet's probes reach it.
    metrics_host: str = "127.0.0.1"
    # Issue 4, outbound deliveries and forwards: how often each destination's queue is polled, how
    # long to wait for an ACK (or an HTTP answer), and after how many failed attempts (AE, timeout,
    # connection) a delivery or forward is dead.
    outbound_poll_seconds: float = 0.5
    outbound_ack_timeout_seconds: float = 30.0
    outbound_max_attempts: int = 100
    # Every destination's circuit breaker: after this many attempts in a row that could not reach
    # it (no connection, no association) it is left alone for the cool-down, then tried with one item.
    outbound_circuit_failures: int = 3
    outbound_circuit_cool_down_seconds: float = 60.0
    # Issue 7, forwarding to DICOM destinations: ACSE/DIMSE/network timeout of an association.
    forward_timeout_seconds: float = 30.0
    # Issue 9: every process's log lines as text or as one JSON object each (DOCTORAI_LOG_FORMAT).
    log_format: Literal["text", "json"] = "text"


@lru_cache
def get_settings() -> IntegrationSettings:
    """The process's integration settings, read once from the environment."""
    return IntegrationSettings()
