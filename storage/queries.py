"""Queries on the study index (studies, series, instances), inference jobs and model packages."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal, cast

from sqlalchemy import Integer, Table, bindparam, exists, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.prepared import Prepared
from storage.steps import IN_PROGRESS, expected_from_steps
from storage.tables import FhirResource, InferenceJob, Instance, InstanceVersion, ModelPackage, PerformedStep, Series, Study

InstanceState = Literal["new", "same", "different"]


def correlation_id_for_study(study_uid: str) -> str:
    """The study's correlation id: derived from its UID, so every process finds the same one."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, study_uid))


@dataclass(frozen=True)
class ReceivedInstance:
    """The header fields of a stored instance that the index keeps."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    patient_id: str
    accession_number: str
    study_date: str
    study_description: str
    modality: str
    body_part: str
    series_number: int | None
    series_description: str
    instance_number: int | None
    object_key: str
    size: int
    sha256: str
    calling_ae: str
    source_address: str
    # NumberOfStudyRelatedInstances (0020,1208) when the sender gave it.
    expected_instances: int | None = None
    # The AE title the sender called (A-ASSOCIATE-RQ, PS3.8 9.3.2), for routing rules.
    called_ae: str = ""


@dataclass(frozen=True)
class IndexedStudy:
    """A study as an instance just left it."""

    study_uid: str
    # Instances the sender announced, if it did (the study is then ready once that many are stored).
    expected_instances: int | None


@dataclass(frozen=True)
class _IndexStatements:
    study: Prepared
    reopen_left: Prepared
    series: Prepared
    instance: Prepared
    version: Prepared


@lru_cache
def _index_statements(dialect: str) -> _IndexStatements:
    """record_instance's statements, built once per dialect (INSERT ... ON CONFLICT is each dialect's own)."""
    insert_for = postgresql.insert if dialect == "postgresql" else sqlite.insert
    studies, series, instances, versions = (cast(Table, t.__table__) for t in (Study, Series, Instance, InstanceVersion))
    # A new study is created receiving; a known one (ready, held, ...) starts receiving again, which
    # opens its next revision. What identifies the study (patient, accession, date) is the first
    # instance's; who sent it last is the last one's. The upsert locks the row on PostgreSQL, so
    # concurrent associations update one study one at a time (SQLite holds the database lock).
    # The count the instance announces, else the one the study's performed steps list (MPPS).
    study = insert_for(studies).values(
        expected_instances=func.coalesce(bindparam("announced", type_=Integer), expected_from_steps(bindparam("steps_of")))
    )
    announced = func.coalesce(study.excluded.expected_instances, studies.c.expected_instances)
    # A new version of an instance takes its place too: a SOP Instance UID sent again under another
    # series or study (a corrected study at the modality) moves there (keep-last policy).
    updated = (
        "series_uid",
        "study_uid",
        "sop_class_uid",
        "transfer_syntax_uid",
        "instance_number",
        "object_key",
        "size",
        "sha256",
        "received_at",
    )
    instance = insert_for(instances)
    latest = select(func.coalesce(func.max(versions.c.version), 0) + 1).where(versions.c.sop_uid == bindparam("version_of"))
    # An instance that moves to another study (keep-last) changes the study it leaves, which then
    # receives again: its next revision is announced after its quiet period, without the instance.
    # A study left empty stays as it was.
    moving = select(instances.c.study_uid).where(instances.c.sop_uid == bindparam("sop"), instances.c.study_uid != bindparam("to"))
    others = select(instances.c.sop_uid).where(instances.c.study_uid == studies.c.study_uid, instances.c.sop_uid != bindparam("sop"))
    reopen_left = (
        update(studies)
        .where(studies.c.study_uid.in_(moving), others.exists())
        .values(status="receiving", last_received_at=bindparam("now"))
    )
    return _IndexStatements(
        reopen_left=Prepared(reopen_left),
        study=Prepared(
            study.on_conflict_do_update(
                index_elements=["study_uid"],
                set_={
                    "calling_ae": study.excluded.calling_ae,
                    "source_address": study.excluded.source_address,
                    "last_received_at": study.excluded.last_received_at,
                    "status": study.excluded.status,
                    "expected_instances": announced,
                },
            ).returning(studies.c.expected_instances)
        ),
        series=Prepared(insert_for(series).on_conflict_do_nothing(index_elements=["series_uid"])),
        instance=Prepared(
            instance.on_conflict_do_update(index_elements=["sop_uid"], set_={c: getattr(instance.excluded, c) for c in updated})
        ),
        version=Prepared(insert(versions).values(version=latest.scalar_subquery())),
    )


def index_instance(
    session: Session, *, item: ReceivedInstance, now: datetime | None = None, new_version: bool = True
) -> IndexedStudy:
    """Index an instance (or a new version of one) whose bytes are stored: its study, series, instance and version rows.

    `new_version=False` says the SOP instance is not indexed yet, which spares looking for a study it leaves.

    Prebuilt Core statements, one round trip each and no lookups first: this runs for every
    C-STORE, where the ORM's get-then-add cost more SELECTs and a unit of work.
    """
    now = now or datetime.now(UTC)
    # Prepared statements on the session's connection, past the ORM's and Core's execution machinery.
    connection = session.connection()
    statements = _index_statements(connection.dialect.name)
    expected = statements.study.scalar(
        connection,
        {
            "study_uid": item.study_uid,
            "correlation_id": correlation_id_for_study(item.study_uid),
            "patient_id": item.patient_id,
            "accession_number": item.accession_number,
            "study_date": item.study_date,
            "study_description": item.study_description,
            "calling_ae": item.calling_ae,
            "called_ae": item.called_ae,
            "source_address": item.source_address,
            "status": "receiving",
            "revision": 0,
            "ready_reason": "",
            "first_received_at": now,
            "last_received_at": now,
            "announced": item.expected_instances or None,
            "steps_of": item.study_uid,
        },
    )
    if new_version:
        statements.reopen_left.run(connection, {"sop": item.sop_uid, "to": item.study_uid, "now": now})
    current = {
        "sop_class_uid": item.sop_class_uid,
        "transfer_syntax_uid": item.transfer_syntax_uid,
        "instance_number": item.instance_number,
        "object_key": item.object_key,
        "size": item.size,
        "sha256": item.sha256,
        "received_at": now,
    }
    statements.series.run(
        connection,
        {
            "series_uid": item.series_uid,
            "study_uid": item.study_uid,
            "modality": item.modality,
            "body_part": item.body_part,
            "series_number": item.series_number,
            "series_description": item.series_description,
        },
    )
    keys = {"sop_uid": item.sop_uid, "series_uid": item.series_uid, "study_uid": item.study_uid}
    statements.instance.run(connection, {**keys, **current})
    statements.version.run(
        connection,
        {
            "version_of": item.sop_uid,
            "sop_uid": item.sop_uid,
            "study_uid": item.study_uid,
            "object_key": item.object_key,
            "size": item.size,
            "sha256": item.sha256,
            "calling_ae": item.calling_ae,
            "received_at": now,
        },
    )
    return IndexedStudy(study_uid=item.study_uid, expected_instances=expected)


def record_instance(session: Session, *, item: ReceivedInstance, now: datetime | None = None) -> Study:
    """index_instance, then the study row as an ORM object (for callers that go on to change it)."""
    index_instance(session, item=item, now=now)
    study = session.get(Study, item.study_uid, populate_existing=True)
    assert study is not None
    return study


_INSTANCES, _VERSIONS = (cast(Table, t.__table__) for t in (Instance, InstanceVersion))
_CURRENT_SHA256 = Prepared(select(_INSTANCES.c.sha256).where(_INSTANCES.c.sop_uid == bindparam("sop_uid")))
_VERSION_WITH = Prepared(
    select(_VERSIONS.c.id).where(_VERSIONS.c.sop_uid == bindparam("sop_uid"), _VERSIONS.c.sha256 == bindparam("sha256")).limit(1)
)


def instance_state(session: Session, *, sop_uid: str, sha256: str) -> InstanceState:
    """Whether a SOP instance is new, stored with exactly these bytes (any version), or stored with others."""
    connection = session.connection()  # prepared statements, past the ORM and Core: this runs for every C-STORE
    current = _CURRENT_SHA256.scalar(connection, {"sop_uid": sop_uid})
    if current is None:
        return "new"
    if current == sha256:
        return "same"
    older = _VERSION_WITH.scalar(connection, {"sop_uid": sop_uid, "sha256": sha256})
    return "same" if older is not None else "different"


def count_instances(session: Session, *, study_uid: str) -> int:
    """How many SOP instances a study holds."""
    return session.scalar(select(func.count()).select_from(Instance).where(Instance.study_uid == study_uid)) or 0


def studies_quiet_since(session: Session, *, before: datetime, steps_since: datetime | None = None) -> list[Study]:
    """Studies still receiving whose last instance arrived before `before`.

    With `steps_since`, not those with a performed procedure step (MPPS) in progress that its
    modality reported on since then: the modality is still acquiring them.
    """
    stmt = (
        select(Study)
        .where(Study.status == "receiving", Study.last_received_at < before)
        .order_by(Study.last_received_at)
        .with_for_update(skip_locked=True)
    )
    if steps_since is not None:
        acquiring = exists().where(
            PerformedStep.study_uid == Study.study_uid,
            PerformedStep.status == IN_PROGRESS,
            PerformedStep.updated_at > steps_since,
        )
        stmt = stmt.where(~acquiring)
    return list(session.scalars(stmt))


def count_receiving(session: Session) -> int:
    """How many studies are still receiving (not yet declared ready)."""
    return session.scalar(select(func.count()).select_from(Study).where(Study.status == "receiving")) or 0


def study_instances(session: Session, *, study_uid: str) -> list[tuple[Instance, Series]]:
    """A study's instances with their series, in series then instance order."""
    stmt = (
        select(Instance, Series)
        .join(Series, Instance.series_uid == Series.series_uid)
        .where(Instance.study_uid == study_uid)
        .order_by(Series.series_number, Series.series_uid, Instance.instance_number, Instance.sop_uid)
    )
    return [(i, s) for i, s in session.execute(stmt)]


def create_job(
    session: Session, *, job_id: str, study_uid: str, revision: int, model: str, model_version: str
) -> InferenceJob | None:
    """Create the job for this input, or return None when it already exists (a replayed event)."""
    existing = session.scalar(
        select(InferenceJob).where(
            InferenceJob.study_uid == study_uid,
            InferenceJob.model == model,
            InferenceJob.model_version == model_version,
            InferenceJob.revision == revision,
        )
    )
    if existing is not None:
        return None
    job = InferenceJob(
        job_id=job_id,
        study_uid=study_uid,
        revision=revision,
        model=model,
        model_version=model_version,
        status="queued",
        error="",
        created_at=datetime.now(UTC),
    )
    session.add(job)
    session.flush()
    return job


# Issue 6: the model registry and what the router and the workers read.


def model_packages(session: Session, *, name: str = "") -> list[ModelPackage]:
    """Registered model package versions (of one name, or all), by name then upload time."""
    stmt = select(ModelPackage).order_by(ModelPackage.name, ModelPackage.uploaded_at, ModelPackage.version)
    if name:
        stmt = stmt.where(ModelPackage.name == name)
    return list(session.scalars(stmt))


def model_package(session: Session, *, name: str, version: str) -> ModelPackage | None:
    """One registered version, or None."""
    return session.get(ModelPackage, (name, version))


def active_model_version(session: Session, *, name: str) -> str | None:
    """The version new jobs of model `name` use, or None when no version is active."""
    stmt = select(ModelPackage.version).where(ModelPackage.name == name, ModelPackage.status == "active")
    return session.scalar(stmt.limit(1))


def add_model_package(session: Session, *, name: str, version: str, framework: str, manifest: str) -> ModelPackage:
    """Register a new, inactive version (the caller checked it is not registered yet)."""
    row = ModelPackage(
        name=name,
        version=version,
        framework=framework,
        manifest=manifest,
        status="inactive",
        uploaded_at=datetime.now(UTC),
        activated_at=None,
    )
    session.add(row)
    session.flush()
    return row


def activate_model_package(session: Session, *, row: ModelPackage) -> None:
    """Make `row` the one active version of its name; the previously active one becomes inactive."""
    others = select(ModelPackage).where(
        ModelPackage.name == row.name, ModelPackage.status == "active", ModelPackage.version != row.version
    )
    for other in session.scalars(others.with_for_update()):
        other.status = "inactive"
    row.status = "active"
    row.activated_at = datetime.now(UTC)
    session.flush()


def deactivate_model_package(session: Session, *, row: ModelPackage) -> None:
    """Take `row` out of use until it is activated again: new jobs of its name find no active version."""
    if row.status == "active":
        row.status = "inactive"
    session.flush()


def retire_model_package(session: Session, *, row: ModelPackage) -> None:
    """Take `row` out of use for good (it can no longer be activated); its files stay."""
    row.status = "retired"
    session.flush()


def job_status(session: Session, *, job_id: str) -> str | None:
    """A job's status (queued, done, failed), or None when there is no such job."""
    return session.scalar(select(InferenceJob.status).where(InferenceJob.job_id == job_id))


def count_crash(session: Session, *, job_id: str) -> int | None:
    """Add one to the crashes of a job, returning how many it has now; None when there is no such job."""
    # One UPDATE: two workers counting crashes of one job (after a rebalance) both count.
    return session.scalar(
        update(InferenceJob)
        .where(InferenceJob.job_id == job_id)
        .values(crashes=InferenceJob.crashes + 1)
        .returning(InferenceJob.crashes)
    )


def fhir_resource_json(session: Session, *, resource_type: str, resource_id: str) -> str | None:
    """The current version of a stored FHIR resource as JSON, or None."""
    row = session.get(FhirResource, (resource_type, resource_id))
    return None if row is None else row.content
