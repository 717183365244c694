"""The study index: studies, their series and instances (every stored version of each), the
modality performed procedure steps (MPPS) that say how many instances a study should hold, and
the storage commitment requests (PS3.4 Annex J) whose reports are still to be sent."""

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.tables.base import Base, UID, UTCDateTime


class Study(Base):
    """One study as received; `revision` counts the times it was declared ready."""

    __tablename__ = "studies"

    study_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    correlation_id: Mapped[str] = mapped_column(String(36), index=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)
    study_description: Mapped[str] = mapped_column(String(256), default="")
    # Issue 17, the keys C-FIND and QIDO-RS match (PS3.4 C.6): names as decoded from the data set's
    # character set, and folded (storage.dicom_values) for matching; StudyTime normalized to HHMMSS.FFFFFF.
    patient_name: Mapped[str] = mapped_column(String(256), default="", server_default="")
    patient_name_folded: Mapped[str] = mapped_column(String(256), default="", server_default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="", server_default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="", server_default="")
    study_time: Mapped[str] = mapped_column(String(16), default="", server_default="")
    study_id: Mapped[str] = mapped_column(String(16), default="", server_default="")
    referring_physician_name: Mapped[str] = mapped_column(String(256), default="", server_default="")
    referring_physician_folded: Mapped[str] = mapped_column(String(256), default="", server_default="")
    # Which header fields the row holds (storage.instances.INDEX_VERSION); rows indexed before
    # a version get its fields from `doctorai index backfill`.
    index_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
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

    # received_at: instances received per minute (the console's overview, storage/overview.py).
    __table_args__ = (
        UniqueConstraint("sop_uid", "version", name="uq_instance_version"),
        Index("ix_instance_versions_received_at", "received_at"),
    )


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


class StorageCommitment(Base):
    """One Storage Commitment Push Model request (PS3.4 J.3): the instances asked for, until its report is sent.

    The report (N-EVENT-REPORT) is tried on the requesting association while it is open, then on
    new associations to the requester until one takes it; a row survives a restart of the listener.
    """

    __tablename__ = "storage_commitments"

    transaction_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    calling_ae: Mapped[str] = mapped_column(String(16))
    # The address the request came from: where the report goes when the peer has no host of its own.
    address: Mapped[str] = mapped_column(String(64), default="")
    # [[SOP Class UID, SOP Instance UID], ...] as requested (Referenced SOP Sequence).
    instances: Mapped[list[list[str]]] = mapped_column(JSON)
    # pending -> reported | expired
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When a report may next be tried on a new association; while the requesting association is
    # open (or an attempt runs), a time in the future holds it back from the other senders.
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    last_error: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
