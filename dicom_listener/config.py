"""Settings of the DICOM listener (env prefix DOCTORAI_).

Per-peer values in the `dicom_peers` table override the `dicom_*` defaults below for that
calling AE (see storage.peers).
"""

from functools import lru_cache

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from integration.instances.ingest import DuplicatePolicy
from integration.instances.metadata import MAX_INFLATED_BYTES
from storage.config import StorageSettings


class DicomSettings(BaseSettings):
    """How the listener presents itself, whom it accepts, and when a study counts as complete."""

    model_config = SettingsConfigDict(env_prefix="DOCTORAI_", extra="ignore")

    dicom_ae_title: str = "DOCTORAI"
    # Loopback by default (secure by default); 0.0.0.0 to accept a PACS on another host.
    dicom_host: str = "127.0.0.1"
    dicom_port: int = 11112
    dicom_metrics_port: int = 9101
    # A study is ready once no instance arrived for this long (DESIGN.md 5.4); per peer in dicom_peers.
    quiet_period_seconds: float = 10.0
    # A study with a performed procedure step in progress (MPPS N-CREATE) is not declared ready by
    # its quiet period until the step ends, or until its modality said nothing for this long.
    dicom_step_hold_seconds: float = Field(default=3600.0, ge=0)
    # Listener processes sharing the port (SO_REUSEPORT); the parent runs the quiet-period sweep.
    dicom_workers: int = Field(default=1, ge=1, le=64)
    # False: only calling AE titles in dicom_peers may associate (PS3.8 9.3.4 reason 3 otherwise).
    # Unset: true on a laptop, false in production mode (issue 18: no unknown peer by default).
    dicom_allow_unknown_peers: bool = Field(default_factory=lambda: StorageSettings().env != "production")
    # Whether a calling AE not in dicom_peers may query (C-FIND) and retrieve (C-MOVE, C-GET);
    # a listed peer may do what its row says (may_find, may_move, may_get).
    dicom_query_retrieve_unknown_peers: bool = False
    # Storage Commitment (PS3.4 J.3.3): a report goes on the requesting association once it has
    # been idle this long after the N-ACTION; a peer that releases first gets it on a new
    # association to its host and port in dicom_peers. Failed reports are tried again, the wait
    # doubling from the first to the largest delay, until the request is this old.
    dicom_commitment_idle_seconds: float = Field(default=1.0, ge=0)
    dicom_commitment_retry_first_seconds: float = Field(default=10.0, gt=0)
    dicom_commitment_retry_max_seconds: float = Field(default=600.0, gt=0)
    dicom_commitment_expiry_seconds: float = Field(default=86400.0, gt=0)
    # Concurrent associations over all listener processes, and per calling AE title.
    dicom_max_associations: int = Field(default=32, ge=1)
    dicom_max_associations_per_peer: int = Field(default=8, ge=1)
    # Maximum length of the P-DATA-TF PDUs we receive (PS3.8 D.1); 0 means no limit.
    dicom_max_pdu: int = Field(default=131072, ge=0)
    # Seconds: waiting for A-ASSOCIATE/A-RELEASE, for a DIMSE message, and idle on the network.
    dicom_acse_timeout: float = 30.0
    dicom_dimse_timeout: float = 60.0
    dicom_network_timeout: float = 120.0
    # Accept SOP classes outside pynetdicom's storage list (stored as received all the same).
    dicom_accept_unknown_sop_classes: bool = False
    # What a SOP instance sent again with other bytes does (identical bytes are always acknowledged).
    dicom_duplicate_policy: DuplicatePolicy = "keep-last"
    # How long the listener trusts its copy of dicom_peers before reading it again.
    dicom_peer_cache_seconds: float = 5.0
    # An instance up to this size is received into memory; a larger one into a file in
    # dicom_spool_dir ("" = the system temp dir). Each association holds at most this much.
    dicom_spool_memory_bytes: int = Field(default=8 << 20, ge=0)
    dicom_spool_dir: str = ""
    # An instance whose data set passes this many bytes is refused as it arrives (0xA700, PS3.4
    # B.2.3; 0 = no limit); a deflated one (PS3.5 A.5) is refused (0xC000) once it inflates past
    # dicom_max_inflated_bytes. Other requests' data sets (MPPS, identifiers, commitment requests)
    # are read whole, so they are bounded by dicom_max_request_bytes, on the wire and inflated.
    dicom_max_instance_bytes: int = Field(default=4 << 30, ge=0)
    dicom_max_inflated_bytes: int = Field(default=MAX_INFLATED_BYTES, ge=1)
    dicom_max_request_bytes: int = Field(default=4 << 20, ge=1)
    # Open TCP connections per listener process, associated or not; one more is answered with a
    # transient A-ASSOCIATE-RJ and closed before any thread or buffer is spent on it.
    dicom_max_connections: int = Field(default=64, ge=1)
    # An association ends (A-ABORT) once it has lasted this long or received this many bytes (0 = no limit).
    dicom_association_seconds: float = Field(default=3600.0, gt=0)
    dicom_max_association_bytes: int = Field(default=64 << 30, ge=0)
    # Connections refused before any association exists (over the cap, garbage, timeouts) are
    # audited and logged once per source address per this many seconds, with their count.
    dicom_refusal_audit_seconds: float = Field(default=60.0, gt=0)
    # TLS (DICOM PS3.15 B.9, BCP 195 profile): with a certificate and key the port speaks TLS
    # only (2762 is the IANA port for DICOM over TLS). A CA file makes client certificates
    # mandatory, verified against it (mutual TLS).
    dicom_tls_cert_file: str = ""
    dicom_tls_key_file: str = ""
    dicom_tls_ca_file: str = ""

    @model_validator(mode="after")
    def _tls_complete(self) -> "DicomSettings":
        if bool(self.dicom_tls_cert_file) != bool(self.dicom_tls_key_file):
            raise ValueError("set both DOCTORAI_DICOM_TLS_CERT_FILE and DOCTORAI_DICOM_TLS_KEY_FILE, or neither")
        if self.dicom_tls_ca_file and not self.dicom_tls_cert_file:
            raise ValueError("DOCTORAI_DICOM_TLS_CA_FILE needs DOCTORAI_DICOM_TLS_CERT_FILE and _KEY_FILE")
        return self


@lru_cache
def get_settings() -> DicomSettings:
    """The process's listener settings, read once from the environment."""
    return DicomSettings()
