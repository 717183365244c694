"""What moves a study through the engine: the outbox, routing rules, model packages, inference
jobs and their reports, and dead letters."""

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.tables.base import Base, UTCDateTime


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


class ModelPackage(Base):
    """One version of a model package; its files are under `models/{name}/{version}/` in object storage.

    At most one version per name is `active`: new jobs use it. `inactive` versions can be
    activated again (roll back); `retired` ones cannot.
    """

    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    framework: Mapped[str] = mapped_column(String(32))
    # The validated manifest (integration.models.manifest.Manifest) as JSON.
    manifest: Mapped[str] = mapped_column(Text)
    # active | inactive | retired
    status: Mapped[str] = mapped_column(String(16), default="inactive", index=True)
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # An artifact in a legacy format, whose loading runs code of its own (Keras HDF5, TorchScript:
    # integration.models.formats), runs only when an admin allowed it for this version.
    allow_legacy_format: Mapped[bool] = mapped_column(Boolean, default=False)


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

    __table_args__ = (
        UniqueConstraint("study_uid", "model", "model_version", "revision", name="uq_job_input"),
        # The console's per-model figures over a window (storage/overview.py).
        Index("ix_inference_jobs_model_created", "model", "created_at"),
    )


class Report(Base):
    """The DiagnosticReport made from one job: at most one per job (DESIGN.md 5.3)."""

    __tablename__ = "reports"

    job_id: Mapped[str] = mapped_column(ForeignKey("inference_jobs.job_id"), primary_key=True)
    study_uid: Mapped[str] = mapped_column(ForeignKey("studies.study_uid"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    diagnostic_report_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # Whether a finding was positive (None: the model reported no findings), and when the study's
    # last instance had arrived: the console's share of positive findings and end-to-end latency.
    positive: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    study_received_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


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
