"""The study index as written and read per instance: a received instance indexed (its study, series,
instance and version rows), whether one is new, a study's instances, and a study's correlation id."""

import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal, cast

from sqlalchemy import Integer, Table, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.dicom_values import fold_name, index_time
from storage.prepared import Prepared
from storage.steps import expected_from_steps
from storage.tables.index import Instance, InstanceVersion, Series, Study

InstanceState = Literal["new", "same", "different"]
# The header fields a study row holds: 1 since the Query/Retrieve keys (issue 17). A row with less
# was indexed before and gets them from `doctorai index backfill` (backfill_candidates, set_details).
INDEX_VERSION = 1


def correlation_id_for_study(study_uid: str) -> str:
    """The study's correlation id: derived from its UID, so every process finds the same one."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, study_uid))


@dataclass(frozen=True)
class StudyDetails:
    """The patient and study attributes C-FIND and QIDO-RS match, as read from the header (text as decoded)."""

    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_time: str = ""
    study_id: str = ""
    referring_physician_name: str = ""

    def columns(self) -> dict[str, str]:
        """The study row's columns for these details: names also folded, the time normalized (storage.dicom_values)."""
        # Folding can lengthen a name ("ß" is "ss"): cut to the column as the name itself was.
        return {
            **asdict(self),
            "study_time": index_time(self.study_time),
            "patient_name_folded": fold_name(self.patient_name)[:256],
            "referring_physician_folded": fold_name(self.referring_physician_name)[:256],
        }


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
    details: StudyDetails = field(default_factory=StudyDetails)
    # Made by us from the study (an AI result's SR or SEG): it joins the study as it is, without
    # opening a new revision, so storing a result never routes the study again.
    derived: bool = False


@dataclass(frozen=True)
class IndexedStudy:
    """A study as an instance just left it."""

    study_uid: str
    # Instances the sender announced, if it did (the study is then ready once that many are stored).
    expected_instances: int | None


@dataclass(frozen=True)
class _IndexStatements:
    study: Prepared
    # The study row of a derived instance: created if need be, never reopened.
    study_kept: Prepared
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
        study_kept=Prepared(study.on_conflict_do_nothing(index_elements=["study_uid"])),
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
    A derived instance leaves its study's status, revision and last arrival as they are.

    Prebuilt Core statements, one round trip each and no lookups first: this runs for every
    C-STORE, where the ORM's get-then-add cost more SELECTs and a unit of work.
    """
    now = now or datetime.now(UTC)
    # Prepared statements on the session's connection, past the ORM's and Core's execution machinery.
    connection = session.connection()
    statements = _index_statements(connection.dialect.name)
    study = {
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
        "index_version": INDEX_VERSION,
        **item.details.columns(),
    }
    if item.derived:
        statements.study_kept.run(connection, study)
        expected = None
    else:
        expected = statements.study.scalar(connection, study)
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


def study_instances(session: Session, *, study_uid: str) -> list[tuple[Instance, Series]]:
    """A study's instances with their series, in series then instance order."""
    stmt = (
        select(Instance, Series)
        .join(Series, Instance.series_uid == Series.series_uid)
        .where(Instance.study_uid == study_uid)
        .order_by(Series.series_number, Series.series_uid, Instance.instance_number, Instance.sop_uid)
    )
    return [(i, s) for i, s in session.execute(stmt)]


def backfill_candidates(session: Session, *, limit: int) -> list[tuple[str, str]]:
    """Studies indexed before INDEX_VERSION, each with the object key of one of its instances."""
    first = (
        select(Instance.study_uid, func.min(Instance.object_key).label("key"))
        .join(Study, Study.study_uid == Instance.study_uid)
        .where(Study.index_version < INDEX_VERSION)
        .group_by(Instance.study_uid)
        .order_by(Instance.study_uid)
        .limit(limit)
    )
    return [(row.study_uid, row.key) for row in session.execute(first)]


def set_details(session: Session, *, study_uid: str, details: StudyDetails | None) -> None:
    """Give a study indexed before INDEX_VERSION its details (None: its header cannot be read; it keeps empty ones)."""
    values = {} if details is None else details.columns()
    session.execute(update(Study).where(Study.study_uid == study_uid).values(index_version=INDEX_VERSION, **values))
