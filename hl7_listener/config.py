"""Settings of the HL7 v2 MLLP listener (env prefix DOCTORAI_)."""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from integration.config import Hl7Identity


class MllpSettings(Hl7Identity):
    """The HL7 v2 MLLP listener (`python -m hl7_listener`); MSH-3/MSH-4 of its ACKs come from Hl7Identity."""

    model_config = SettingsConfigDict(env_prefix="DOCTORAI_", extra="ignore")

    # Loopback by default (secure by default); 0.0.0.0 to take connections from an EHR or RIS.
    mllp_host: str = "127.0.0.1"
    mllp_port: int = 2575
    mllp_metrics_port: int = 9105
    # Larger blocks are refused with AR and the connection is closed (it cannot be resynchronised).
    mllp_max_message_bytes: int = 10 * 1024 * 1024
    # A connection with no bytes for this long is closed.
    mllp_idle_timeout_seconds: float = 300.0
    # A connection is closed once it has been open this long (its sender connects again), so no
    # peer holds one forever by trickling bytes within the idle timeout.
    mllp_connection_seconds: float = Field(default=86400.0, gt=0)
    # Open connections; one more is closed at once, unread. Each buffers at most about twice
    # mllp_max_message_bytes (asyncio's reader stops reading the socket past twice its limit),
    # so together they hold at most that times this many.
    mllp_max_connections: int = Field(default=64, ge=1)
    # Connections refused before a message (address, over the cap, framing) are audited and logged
    # once per source address and kind per this many seconds, with their count.
    mllp_refusal_audit_seconds: float = Field(default=60.0, gt=0)
    # TLS: a PEM certificate chain and key turn it on; a CA file also requires client certificates.
    mllp_tls_cert: str = ""
    mllp_tls_key: str = ""
    mllp_tls_ca: str = ""
    # Comma-separated "APPLICATION|FACILITY" (MSH-3|MSH-4) pairs, "*" matching any; empty allows all.
    mllp_allowed_senders: str = ""
    # Comma-separated source addresses or networks (10.0.0.0/8); empty allows all.
    mllp_allowed_addresses: str = ""


@lru_cache
def get_settings() -> MllpSettings:
    """The process's MLLP settings, read once from the environment."""
    return MllpSettings()
