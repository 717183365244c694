"""SQL tables (SQLAlchemy 2.0 declarative). Every change goes through an Alembic migration."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Dialect, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy import TypeDecorator
from sqlalchemy import UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# DICOM UIDs are at most 64 characters (PS3.5 section 9.1).
UID = String(64)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on SQLite (which drops the zone) too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: store timezone-aware UTC times")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stamp: datetime = value
        return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base; `Base.metadata` is what Alembic migrates."""

    type_annotation_map = {datetime: UTCDateTime}


class Study(Base):
    """One study as received; `revision` counts the times it was declared ready."""

    __tablename__ = "studies"

    study_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    correlation_id: Mapped[str] = mapped_column(String(36), index=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_description: Mapped[str] = mapped_column(String(256), default="")
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    # Issue 7: the AE title the sender called (our listener may answer to several), for routing rules.
    called_ae: Mapped[str] = mapped_column(String(16), default="", server_default="")
    source_address: Mapped[str] = mapped_column(String(64), default="")
    # receiving: instances are arriving; ready: announced as `study.ready` at `revision`;
    # held / dropped: a routing rule held it for manual release or dropped it (issue 7).
    status: Mapped[str] = mapped_column(String(16), default="receiving", index=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    ready_reason: Mapped[str] = mapped_column(String(32), default="")
    first_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Instances the sender announced (NumberOfStudyRelatedInstances, or an order): the study is
    # ready as soon as this many are stored, without waiting for the quiet period.
    expected_instances: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Series(Base):
    """One series of a study."""

    __tablename__ = "series"

    series_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    study_uid: Mapped[str] = mapped_column(ForeignKey("studies.study_uid"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    body_part: Mapped[str] = mapped_column(String(64), default="")
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str] = mapped_column(String(256), default="")


class Instance(Base):
    """One SOP instance and where its bytes are."""

    __tablename__ = "instances"

    sop_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    series_uid: Mapped[str] = mapped_column(ForeignKey("series.series_uid"), index=True)
    study_uid: Mapped[str] = mapped_column(ForeignKey("studies.study_uid"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    object_key: Mapped[str] = mapped_column(String(256))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OutboxEvent(Base):
    """An event written with the data it announces; the relay publishes it to Kafka (DESIGN.md 5.2)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(128))  # without the deployment's prefix
    key: Mapped[str] = mapped_column(String(128))
    payload: Mapped[str] = mapped_column(Text)  # a messages.py model as JSON
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index("ix_outbox_unsent", "sent_at", "id"),)


class InferenceJob(Base):
    """One model run on one revision of a study; unique so replays never run twice (DESIGN.md 5.3)."""

    __tablename__ = "inference_jobs"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    study_uid: Mapped[str] = mapped_column(ForeignKey("studies.study_uid"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32))
    # queued -> done | failed
    status: Mapped[str] = mapped_column(String(16), default="queued")
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Times its model's runner died running this job (or loading for it); kept here, not in the
    # worker, so that a restarted worker does not retry a poison input forever.
    crashes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (UniqueConstraint("study_uid", "model", "model_version", "revision", name="uq_job_input"),)


class Report(Base):
    """The DiagnosticReport made from one job: at most one per job (DESIGN.md 5.3)."""

    __tablename__ = "reports"

    job_id: Mapped[str] = mapped_column(ForeignKey("inference_jobs.job_id"), primary_key=True)
    study_uid: Mapped[str] = mapped_column(ForeignKey("studies.study_uid"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    diagnostic_report_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class FhirResource(Base):
    """The current version of a FHIR resource, as R4 JSON."""

    __tablename__ = "fhir_resources"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    content: Mapped[str] = mapped_column(Text)

    # Search pages walk (last_updated, id) per type: keyset paging (storage/fhir/store.py).
    __table_args__ = (Index("ix_fhir_resources_type_updated", "resource_type", "last_updated", "resource_id"),)


class FhirResourceVersion(Base):
    """Every version of every FHIR resource, for vread and history."""

    __tablename__ = "fhir_resource_history"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime())
    content: Mapped[str] = mapped_column(Text)
    # The interaction that made this version: POST, PUT or DELETE (a DELETE version's content is "").
    method: Mapped[str] = mapped_column(String(8), default="PUT", server_default="PUT")

    __table_args__ = (Index("ix_fhir_history_type_updated", "resource_type", "last_updated"),)


class FhirSearchIndex(Base):
    """One search-parameter value of a current resource (token, reference, date or string)."""

    __tablename__ = "fhir_search_index"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    # Token code, "Type/id" reference, or normalised string; "" for dates.
    value: Mapped[str] = mapped_column(String(256))
    # Token system ("" when none), the string as written (for :exact), and date ranges (closed, UTC).
    system: Mapped[str] = mapped_column(String(256), default="", server_default="")
    exact: Mapped[str] = mapped_column(String(256), default="", server_default="")
    low: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    high: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    # Covering indexes (migration 0302): a search starts from the matching entries of one
    # parameter (lookup, low, high: the owner's id is in the index) and probes the others per
    # resource and lists a page's references (owner: type, id and parameter equal, so SQLite,
    # which plans without statistics, prefers it to scanning a parameter's entries), all without
    # reading table rows (fhir_api/fhir/search.py, storage/fhir/store.py).
    __table_args__ = (
        Index("ix_fhir_search_lookup", "resource_type", "param", "value", "resource_id", "system"),
        Index("ix_fhir_search_owner", "resource_type", "resource_id", "param", "value", "low", "high"),
        Index("ix_fhir_search_low", "resource_type", "param", "low", "resource_id"),
        Index("ix_fhir_search_high", "resource_type", "param", "high", "resource_id"),
    )


class AuditEvent(Base):
    """One audit record, shaped after FHIR AuditEvent, hash-chained to the one before it."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    correlation_id: Mapped[str] = mapped_column(String(64), index=True)
    type_code: Mapped[str] = mapped_column(String(32))
    subtype: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(1))
    outcome: Mapped[str] = mapped_column(String(2))
    agent_who: Mapped[str] = mapped_column(String(128))
    agent_address: Mapped[str] = mapped_column(String(64), default="")
    entity_what: Mapped[str] = mapped_column(String(256), default="")
    detail: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)

    # AuditEvent searches by agent and by entity (migration 0302, fhir_api/fhir/auditevents.py).
    __table_args__ = (
        Index("ix_audit_events_agent", "agent_who", "id"),
        Index("ix_audit_events_entity", "entity_what", "id"),
    )


class AuditExport(Base):
    """How far the audit trail has been delivered to one external repository (syslog collector)."""

    __tablename__ = "audit_exports"

    destination: Mapped[str] = mapped_column(String(256), primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


# Issue 5: FHIR server (API clients for SMART Backend Services, subscription deliveries).


class ApiClient(Base):
    """A registered back-end client (SMART Backend Services): its allowed scopes and credentials."""

    __tablename__ = "api_clients"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    # Space-separated SMART scopes this client may ask for.
    scopes: Mapped[str] = mapped_column(Text)
    # private_key_jwt: `jwks` holds the public keys (a JWK Set as JSON); client_secret_basic: `secret_hash`.
    auth_method: Mapped[str] = mapped_column(String(32))
    jwks: Mapped[str] = mapped_column(Text, default="")
    secret_hash: Mapped[str] = mapped_column(String(256), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ClientAssertion(Base):
    """The jti of a client assertion already used, kept until it expires (RFC 7523 section 3, replay)."""

    __tablename__ = "client_assertions"

    jti: Mapped[str] = mapped_column(String(256), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class SubscriptionDelivery(Base):
    """One notification owed to a Subscription, queued with the change that caused it."""

    __tablename__ = "subscription_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # A deliverer holds a row until this time, so two delivery processes never send it at once.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        UniqueConstraint("subscription_id", "resource_type", "resource_id", "version_id", name="uq_delivery_change"),
        Index("ix_subscription_deliveries_pending", "delivered_at", "subscription_id", "id"),
    )


# Issue 4: HL7 v2 over MLLP (messages in, orders and their study links, ORU^R01 out).


class Hl7Message(Base):
    """One HL7 v2 message as received: where its raw bytes are, how it was answered, what was not mapped."""

    __tablename__ = "hl7_messages"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    correlation_id: Mapped[str] = mapped_column(String(36), index=True)
    sender_application: Mapped[str] = mapped_column(String(180), default="")
    sender_facility: Mapped[str] = mapped_column(String(180), default="")
    source_address: Mapped[str] = mapped_column(String(64), default="")
    control_id: Mapped[str] = mapped_column(String(199), default="")  # MSH-10
    message_type: Mapped[str] = mapped_column(String(8), default="")  # MSH-9.1
    trigger_event: Mapped[str] = mapped_column(String(8), default="")  # MSH-9.2
    version: Mapped[str] = mapped_column(String(16), default="")  # MSH-12
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    object_key: Mapped[str] = mapped_column(String(256), default="")
    size: Mapped[int] = mapped_column(Integer, default=0)
    # accepted: stored and mapped; rejected: refused (AR); error: stored but not mapped (AE).
    status: Mapped[str] = mapped_column(String(16))
    ack_code: Mapped[str] = mapped_column(String(2))
    error: Mapped[str] = mapped_column(Text, default="")
    # Segment-field path -> value for every populated field the mapping did not use.
    unmapped: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # "application|facility|control id" of accepted messages, so a re-send is found, not re-processed.
    dedupe_key: Mapped[str | None] = mapped_column(String(600), nullable=True, unique=True)


class Order(Base):
    """An imaging order (ORM^O01 / OMI^O23) and the study it is linked to, by accession number."""

    __tablename__ = "orders"

    service_request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    placer_number: Mapped[str] = mapped_column(String(199), default="")  # ORC-2 / OBR-2, EI as sent
    filler_number: Mapped[str] = mapped_column(String(199), default="")  # ORC-3 / OBR-3
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)  # PID-3 first value
    # ServiceRequest.status (http://hl7.org/fhir/R4/valueset-request-status.html).
    status: Mapped[str] = mapped_column(String(16))
    order_control: Mapped[str] = mapped_column(String(2), default="")  # last ORC-1
    study_uid: Mapped[str | None] = mapped_column(UID, nullable=True, index=True)
    message_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Destination(Base):
    """Somewhere results are sent. Only kind "mllp" exists yet; dicom/fhir/webhook add their `options`."""

    __tablename__ = "destinations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(256), default="")
    port: Mapped[int] = mapped_column(Integer, default=0)
    tls: Mapped[bool] = mapped_column(default=False)
    enabled: Mapped[bool] = mapped_column(default=True)
    options: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Delivery(Base):
    """One outbound message for one destination, retried until acknowledged or dead-lettered."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    destination_id: Mapped[int] = mapped_column(ForeignKey("destinations.id"), index=True)
    correlation_id: Mapped[str] = mapped_column(String(36), index=True)
    # What is delivered, e.g. "DiagnosticReport/<id>/_history/<version>": unique per destination.
    subject: Mapped[str] = mapped_column(String(256))
    control_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)  # the validated message, exactly as it is sent
    # pending -> sent | dead
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str] = mapped_column(Text, default="")
    ack_code: Mapped[str] = mapped_column(String(2), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        UniqueConstraint("destination_id", "subject", name="uq_delivery_subject"),
        Index("ix_deliveries_due", "destination_id", "status", "next_attempt_at"),
    )


# Issue 3: DICOM ingest (per-peer settings, instance versions).


class PerformedStep(Base):
    """A Modality Performed Procedure Step (MPPS, PS3.4 F.7): what a modality did for a scheduled step.

    Once every step of a study is COMPLETED or DISCONTINUED, the instances they list are the ones
    the study should hold (IHE Scheduled Workflow): the study is ready when that many are stored.
    """

    __tablename__ = "performed_steps"

    sop_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    study_uid: Mapped[str] = mapped_column(UID, index=True)
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    # IN PROGRESS, COMPLETED or DISCONTINUED (0040,0252).
    status: Mapped[str] = mapped_column(String(16))
    # SOP instances the step's Performed Series Sequence references (None until it lists any).
    instances: Mapped[int | None] = mapped_column(Integer, nullable=True)
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DicomPeer(Base):
    """A calling AE title allowed to send to the listener, with its own settings (NULL: the global one)."""

    __tablename__ = "dicom_peers"

    ae_title: Mapped[str] = mapped_column(String(16), primary_key=True)
    # Empty: any address; otherwise the only host or IP address the AE may call from.
    host: Mapped[str] = mapped_column(String(255), default="")
    quiet_period_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_associations: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_pdu: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dimse_timeout: Mapped[float | None] = mapped_column(Float, nullable=True)
    network_timeout: Mapped[float | None] = mapped_column(Float, nullable=True)
    # keep-first | keep-last | reject: what a re-send of a SOP instance with other bytes does.
    duplicate_policy: Mapped[str | None] = mapped_column(String(16), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class InstanceVersion(Base):
    """Every version of a SOP instance that was stored; `instances` points at the current one."""

    __tablename__ = "instance_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sop_uid: Mapped[str] = mapped_column(UID, index=True)
    study_uid: Mapped[str] = mapped_column(UID)
    version: Mapped[int] = mapped_column(Integer)
    object_key: Mapped[str] = mapped_column(String(256))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("sop_uid", "version", name="uq_instance_version"),)


# Issue 6: model packages and their registry.


class ModelPackage(Base):
    """One version of a model package; its files are under `models/{name}/{version}/` in object storage.

    At most one version per name is `active`: new jobs use it. `inactive` versions can be
    activated again (roll back); `retired` ones cannot.
    """

    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    framework: Mapped[str] = mapped_column(String(32))
    # The validated manifest (integration.manifest.Manifest) as JSON.
    manifest: Mapped[str] = mapped_column(Text)
    # active | inactive | retired
    status: Mapped[str] = mapped_column(String(16), default="inactive", index=True)
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


# Issue 7: routing rules as data (integration.rules.Rule as JSON, edited through the admin API).


class RoutingRule(Base):
    """One routing rule; `definition` is the validated rule as JSON, the other columns copy it."""

    __tablename__ = "routing_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    priority: Mapped[int] = mapped_column(Integer, default=100)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    definition: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


# Issue 7: admin API (dead letters).


class DeadLetter(Base):
    """A message a consumer could not process (DESIGN.md 5.5), kept until an admin replays or discards it."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The DeadLetter event's id: the dlq consumer stores each letter once, however often it is delivered.
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    source_topic: Mapped[str] = mapped_column(String(128), index=True)  # without the deployment's prefix
    key: Mapped[str] = mapped_column(String(128), default="")
    payload: Mapped[str] = mapped_column(Text)  # the failed message, as it was on its topic
    error: Mapped[str] = mapped_column(Text, default="")
    correlation_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # open -> replayed | discarded
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    resolved_by: Mapped[str] = mapped_column(String(128), default="")
    reason: Mapped[str] = mapped_column(Text, default="")


# Issue 7: forwarding studies to DICOM destinations (auto-routing).


class Forward(Base):
    """One revision of a study, or one job's result (a DICOM SR), queued for one DICOM destination.

    Complete when every instance was accepted.
    """

    __tablename__ = "forwards"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    destination_id: Mapped[int] = mapped_column(ForeignKey("destinations.id"), index=True)
    study_uid: Mapped[str] = mapped_column(UID, index=True)
    revision: Mapped[int] = mapped_column(Integer)
    correlation_id: Mapped[str] = mapped_column(String(36), index=True)
    rule: Mapped[str] = mapped_column(String(64), default="")  # the routing rule that asked for it
    # study: the study's instances (a routing rule); result: what a job made of it (its SR, issue 7).
    kind: Mapped[str] = mapped_column(String(16), default="study", server_default="study")
    # The job whose result this forward carries; "" for a study forward.
    job_id: Mapped[str] = mapped_column(String(36), default="", server_default="")
    # pending -> sent | dead (dead -> pending again when an operator retries it)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        # One study forward per revision and one result forward per job, for each destination.
        UniqueConstraint("destination_id", "study_uid", "revision", "job_id", name="uq_forward_subject"),
        Index("ix_forwards_due", "destination_id", "status", "next_attempt_at"),
    )


class ForwardInstance(Base):
    """One instance of a forward and how its last C-STORE ended."""

    __tablename__ = "forward_instances"

    forward_id: Mapped[int] = mapped_column(ForeignKey("forwards.id"), primary_key=True)
    sop_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    object_key: Mapped[str] = mapped_column(String(256))
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    # pending -> sent | failed (failed ones are sent again on the forward's next attempt)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # The C-STORE response status (PS3.7 9.1.1.1.9), None when no response came.
    dicom_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
