"""Query/Retrieve over the study index: the information models' keys (PS3.4 C.6), their matching
(PS3.4 C.2.2.2) as SQL, the values each match returns, and the instances a retrieve names.

One implementation for every front door: C-FIND, C-MOVE and C-GET (dicom_listener/query.py,
retrieve.py) and QIDO-RS (fhir_api/dicomweb/qido.py, PS3.18 10.6). Matching, as the conformance
statement (docs/dicom-conformance.md) describes it:

- Single value: exact; person names case- and accent-insensitive (C.2.2.2.1.1, storage.dicom_values).
- List of UID: any of the backslash-separated UIDs (C.2.2.2.2).
- Universal: an empty value, or "*" alone (C.2.2.2.3).
- Wild card: "*" and "?" in text and names (C.2.2.2.4).
- Range: "a-b", "-b", "a-" for dates and times, compared by meaning (C.2.2.2.5); a single date
  or time is the range of its precision ("1030" is 10:30:00 to 10:30:59.999999).
- A zero-length value held for a key matches every criterion on it (C.2.2.1.2).

Keys of the query level and of the levels above it are supported (relational as well as
hierarchical queries, so QIDO's /series and /instances work); keys of lower levels are not.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from sqlalchemy import ColumnElement, FromClause, Select, Table, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from storage.dicom_values import fold_name, parse_time
from storage.forwards import ForwardItem
from storage.tables.index import Instance, Series, Study

Level = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]
LEVELS: tuple[Level, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")
# The unique key of each level (PS3.4 C.6.1.1, C.6.2.1).
UNIQUE: dict[Level, str] = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
Matching = Literal["uid", "text", "name", "date", "time", "number", "modalities", "count"]
Value = str | int | list[str] | None


class QueryError(ValueError):
    """A key whose value cannot be matched: a malformed date, time or number, too many UIDs."""


# IS values are 32-bit signed integers (PS3.5 6.2); a list of UIDs is one SQL parameter each.
_IS_RANGE = range(-(2**31), 2**31)
MAX_UIDS = 10_000


def _uid_list(keyword: str, value: str) -> list[str]:
    uids = [u.strip(" \x00") for u in value.split("\\") if u.strip(" \x00")]
    if any("\x00" in u for u in uids):
        raise QueryError(f"{keyword}: a NUL character inside a UID")
    if not uids or len(uids) > MAX_UIDS:
        raise QueryError(f"{keyword}: a list of 1 to {MAX_UIDS} UIDs, not {len(uids)}")
    return uids


@dataclass(frozen=True)
class Key:
    """A key of the information models: its level and how it is matched ("count": returned only)."""

    keyword: str
    level: Level
    matching: Matching
    # A required (or unique) key (PS3.4 C.6.1.1 tables); the others are optional.
    required: bool = False


KEYS: dict[str, Key] = {
    k.keyword: k
    for k in (
        Key("PatientName", "PATIENT", "name", True),
        Key("PatientID", "PATIENT", "text", True),
        Key("PatientBirthDate", "PATIENT", "date"),
        Key("PatientSex", "PATIENT", "text"),
        Key("NumberOfPatientRelatedStudies", "PATIENT", "count"),
        Key("NumberOfPatientRelatedSeries", "PATIENT", "count"),
        Key("NumberOfPatientRelatedInstances", "PATIENT", "count"),
        Key("StudyDate", "STUDY", "date", True),
        Key("StudyTime", "STUDY", "time", True),
        Key("AccessionNumber", "STUDY", "text", True),
        Key("StudyID", "STUDY", "text", True),
        Key("StudyInstanceUID", "STUDY", "uid", True),
        Key("ReferringPhysicianName", "STUDY", "name"),
        Key("StudyDescription", "STUDY", "text"),
        Key("ModalitiesInStudy", "STUDY", "modalities"),
        Key("NumberOfStudyRelatedSeries", "STUDY", "count"),
        Key("NumberOfStudyRelatedInstances", "STUDY", "count"),
        Key("Modality", "SERIES", "text", True),
        Key("SeriesNumber", "SERIES", "number", True),
        Key("SeriesInstanceUID", "SERIES", "uid", True),
        Key("SeriesDescription", "SERIES", "text"),
        Key("BodyPartExamined", "SERIES", "text"),
        Key("NumberOfSeriesRelatedInstances", "SERIES", "count"),
        Key("SOPInstanceUID", "IMAGE", "uid", True),
        Key("SOPClassUID", "IMAGE", "uid"),
        Key("InstanceNumber", "IMAGE", "number", True),
        Key("AvailableTransferSyntaxUID", "IMAGE", "uid"),
    )
}

_STUDIES, _SERIES, _INSTANCES = (cast(Table, t.__table__) for t in (Study, Series, Instance))
_OTHER_STUDY = _STUDIES.alias("other_study")
_COLUMNS: dict[str, ColumnElement[Any]] = {
    "PatientName": _STUDIES.c.patient_name,
    "PatientID": _STUDIES.c.patient_id,
    "PatientBirthDate": _STUDIES.c.patient_birth_date,
    "PatientSex": _STUDIES.c.patient_sex,
    "StudyDate": _STUDIES.c.study_date,
    "StudyTime": _STUDIES.c.study_time,
    "AccessionNumber": _STUDIES.c.accession_number,
    "StudyID": _STUDIES.c.study_id,
    "StudyInstanceUID": _STUDIES.c.study_uid,
    "ReferringPhysicianName": _STUDIES.c.referring_physician_name,
    "StudyDescription": _STUDIES.c.study_description,
    "Modality": _SERIES.c.modality,
    "SeriesNumber": _SERIES.c.series_number,
    "SeriesInstanceUID": _SERIES.c.series_uid,
    "SeriesDescription": _SERIES.c.series_description,
    "BodyPartExamined": _SERIES.c.body_part,
    "SOPInstanceUID": _INSTANCES.c.sop_uid,
    "SOPClassUID": _INSTANCES.c.sop_class_uid,
    "InstanceNumber": _INSTANCES.c.instance_number,
    "AvailableTransferSyntaxUID": _INSTANCES.c.transfer_syntax_uid,
}
# Names are matched on their folded copies (storage.dicom_values.fold_name).
_FOLDED = {"PatientName": _STUDIES.c.patient_name_folded, "ReferringPhysicianName": _STUDIES.c.referring_physician_folded}


def _count(table: FromClause, *where: ColumnElement[bool]) -> ColumnElement[int]:
    return select(func.count()).select_from(table).where(*where).scalar_subquery()


# Counted through aliases, so that a count never correlates with the query's own series or instances.
_COUNTED_SERIES, _COUNTED_INSTANCES = _SERIES.alias("counted_series"), _INSTANCES.alias("counted_instances")
_SAME_PATIENT = _OTHER_STUDY.c.patient_id == _STUDIES.c.patient_id
_COUNTS: dict[str, ColumnElement[int]] = {
    "NumberOfPatientRelatedStudies": _count(_OTHER_STUDY, _SAME_PATIENT),
    "NumberOfPatientRelatedSeries": _count(
        _COUNTED_SERIES.join(_OTHER_STUDY, _COUNTED_SERIES.c.study_uid == _OTHER_STUDY.c.study_uid), _SAME_PATIENT
    ),
    "NumberOfPatientRelatedInstances": _count(
        _COUNTED_INSTANCES.join(_OTHER_STUDY, _COUNTED_INSTANCES.c.study_uid == _OTHER_STUDY.c.study_uid), _SAME_PATIENT
    ),
    "NumberOfStudyRelatedSeries": _count(_COUNTED_SERIES, _COUNTED_SERIES.c.study_uid == _STUDIES.c.study_uid),
    "NumberOfStudyRelatedInstances": _count(_COUNTED_INSTANCES, _COUNTED_INSTANCES.c.study_uid == _STUDIES.c.study_uid),
    "NumberOfSeriesRelatedInstances": _count(_COUNTED_INSTANCES, _COUNTED_INSTANCES.c.series_uid == _SERIES.c.series_uid),
}
# A deterministic order for each level, so that QIDO-RS pages are stable (PS3.18 8.3.4.4.1). The
# first column is wrapped in an expression so that SQLite finds the matches first and sorts them,
# rather than walking every row in the order of that column's index.
_ORDER: dict[Level, tuple[ColumnElement[Any], ...]] = {
    "PATIENT": (_STUDIES.c.patient_id,),
    "STUDY": (func.coalesce(_STUDIES.c.study_date, ""), _STUDIES.c.study_time, _STUDIES.c.study_uid),
    "SERIES": (func.coalesce(_SERIES.c.study_uid, ""), func.coalesce(_SERIES.c.series_number, 0), _SERIES.c.series_uid),
    "IMAGE": (func.coalesce(_INSTANCES.c.series_uid, ""), func.coalesce(_INSTANCES.c.instance_number, 0), _INSTANCES.c.sop_uid),
}


def supported(keyword: str, level: Level) -> bool:
    """Whether a key is matched and returned at `level`: a key of that level or of one above it."""
    key = KEYS.get(keyword)
    return key is not None and LEVELS.index(key.level) <= LEVELS.index(level)


def level_keys(level: Level, *, top: Level = "PATIENT") -> list[str]:
    """Every supported key from `top` down to `level`, in the catalogue's order."""
    levels = LEVELS[LEVELS.index(top) : LEVELS.index(level) + 1]
    return [k.keyword for k in KEYS.values() if k.level in levels]


@dataclass(frozen=True)
class Match:
    """One match: the values of the keys the query returns, and whose data it discloses (for the audit trail)."""

    values: dict[str, Value]
    study_uid: str  # "" for a patient
    patient_id: str


@dataclass(frozen=True)
class Query:
    """A query at one level: the keys to match (keyword -> value as sent) and the keys whose values to return."""

    level: Level
    keys: Mapping[str, str]
    returns: Sequence[str]
    limit: int | None = None
    offset: int = 0


def _wildcard(column: ColumnElement[Any], pattern: str, dialect: str) -> ColumnElement[bool]:
    """Wild card matching (PS3.4 C.2.2.2.4), case-sensitive on both databases: SQLite's GLOB, PostgreSQL's LIKE."""
    if dialect == "sqlite":
        return column.op("GLOB")(pattern.replace("[", "[[]"))
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped.replace("*", "%").replace("?", "_"), escape="\\")


def _text(column: ColumnElement[Any], value: str, dialect: str) -> ColumnElement[bool] | None:
    if value == "*":
        return None  # universal (PS3.4 C.2.2.2.4 note 1)
    if "*" in value or "?" in value:
        return _wildcard(column, value, dialect)
    return column == value


def _date(value: str) -> str:
    digits = value.strip().replace(".", "")  # the ACR-NEMA form YYYY.MM.DD too
    if len(digits) != 8 or not digits.isdigit():
        raise QueryError(f"{value!r} is not a date (YYYYMMDD)")
    return digits


def _time(value: str) -> tuple[str, str]:
    parsed = parse_time(value)
    if parsed is None:
        raise QueryError(f"{value!r} is not a time (HHMMSS.FFFFFF)")
    return parsed


def _range(column: ColumnElement[Any], value: str, matching: Matching) -> ColumnElement[bool]:
    """Single value or range matching of a date or time (PS3.4 C.2.2.2.5), by meaning."""
    first, dash, last = value.partition("-")
    if dash and not first.strip() and not last.strip():
        raise QueryError(f"{value!r} is a range without bounds")
    if matching == "date":
        low = _date(first) if first.strip() else None
        high = _date(last) if last.strip() else None
        if not dash:
            high = low
    else:
        low = _time(first)[0] if first.strip() else None
        high = _time(last)[1] if last.strip() else None
        if not dash:
            high = _time(first)[1]
    bounds = [column >= low] if low is not None else []
    if high is not None:
        bounds.append(column <= high)
    return and_(*bounds)


def _modalities(value: str, dialect: str) -> ColumnElement[bool] | None:
    """ModalitiesInStudy: the study has a series of one of the (backslash-separated) modalities."""
    modality = _COUNTED_SERIES.c.modality
    wanted = [_text(modality, v.strip(), dialect) for v in value.split("\\") if v.strip()]
    if any(w is None for w in wanted) or not wanted:
        return None
    same_study = _COUNTED_SERIES.c.study_uid == _STUDIES.c.study_uid
    return exists().where(same_study, or_(*cast(list[ColumnElement[bool]], wanted)))


def _condition(keyword: str, value: str, dialect: str) -> ColumnElement[bool] | None:
    """The SQL condition one key's value asks for; None for universal matching."""
    key = KEYS[keyword]
    value = value.strip(" \x00")  # padding (PS3.5 6.2)
    if "\x00" in value:
        raise QueryError(f"{keyword}: a NUL character inside a value")
    if not value or key.matching == "count":
        return None
    if key.matching == "modalities":
        return _modalities(value, dialect)
    column = _COLUMNS[keyword]
    if key.matching == "uid":
        uids = _uid_list(keyword, value)
        return column.in_(uids) if len(uids) > 1 else column == uids[0]
    if key.matching == "number":
        try:
            number = int(value)
        except ValueError:
            raise QueryError(f"{keyword} {value!r} is not an integer") from None
        if number not in _IS_RANGE:
            raise QueryError(f"{keyword} {value!r} is out of the range of IS")
        return or_(column == number, column.is_(None))
    if key.matching == "name":
        condition = _text(_FOLDED[keyword], fold_name(value), dialect)
    elif key.matching == "text":
        condition = _text(column, value, dialect)
    else:
        condition = _range(column, value, key.matching)
    # An entity without a value for the key matches every criterion on it (PS3.4 C.2.2.1.2).
    return None if condition is None else or_(condition, column == "")


def _source(level: Level) -> Any:
    if level in ("PATIENT", "STUDY"):
        return _STUDIES
    joined = _SERIES.join(_STUDIES, _SERIES.c.study_uid == _STUDIES.c.study_uid)
    if level == "SERIES":
        return joined
    return _INSTANCES.join(joined, _INSTANCES.c.series_uid == _SERIES.c.series_uid)


def _selected(level: Level, returns: Iterable[str]) -> list[ColumnElement[Any]]:
    # Whose data each match is (a patient has no one study); ModalitiesInStudy is filled from its study.
    columns: list[ColumnElement[Any]] = [_STUDIES.c.patient_id.label("_patient")]
    if level != "PATIENT":
        columns.append(_STUDIES.c.study_uid.label("_study"))
    for keyword in returns:
        if keyword in _COUNTS:
            columns.append(_COUNTS[keyword].label(keyword))
        elif keyword in _COLUMNS:
            column = _COLUMNS[keyword]
            # One row per patient: its attributes as one of its studies has them.
            grouped = level == "PATIENT" and keyword != "PatientID"
            columns.append((func.max(column) if grouped else column).label(keyword))
    return columns


def _statement(query: Query, dialect: str) -> Select[Any]:
    unknown = [k for k in [*query.keys, *query.returns] if not supported(k, query.level)]
    if unknown:
        raise QueryError(f"not keys of the {query.level} level or above: {', '.join(unknown)}")
    conditions = [c for k, v in query.keys.items() if (c := _condition(k, v, dialect)) is not None]
    stmt = select(*_selected(query.level, query.returns)).select_from(_source(query.level)).where(*conditions)
    if query.level == "PATIENT":
        # Patients are the studies' Patient IDs: a study without one belongs to no patient we can name.
        stmt = stmt.where(_STUDIES.c.patient_id != "").group_by(_STUDIES.c.patient_id)
    stmt = stmt.order_by(*_ORDER[query.level]).offset(query.offset)
    return stmt.limit(query.limit) if query.limit is not None else stmt


def _modalities_of(session: Session, study_uids: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for start in range(0, len(study_uids), 500):
        chunk = study_uids[start : start + 500]
        rows = session.execute(
            select(_SERIES.c.study_uid, _SERIES.c.modality)
            .where(_SERIES.c.study_uid.in_(chunk), _SERIES.c.modality != "")
            .distinct()
            .order_by(_SERIES.c.study_uid, _SERIES.c.modality)
        )
        for study_uid, modality in rows:
            found.setdefault(study_uid, []).append(modality)
    return found


def count(session: Session, query: Query) -> int:
    """How many matches `query` has in all, whatever its limit and offset."""
    whole = _statement(replace(query, limit=None, offset=0), session.get_bind().dialect.name).order_by(None)
    return session.scalar(select(func.count()).select_from(whole.subquery())) or 0


def find(session: Session, query: Query) -> list[Match]:
    """The matches of `query`, each with {keyword: value} for the keys it returns (None: no value held).

    Raises QueryError for a key this level does not support or a value it cannot match.
    """
    rows = [dict(r._mapping) for r in session.execute(_statement(query, session.get_bind().dialect.name))]
    if "ModalitiesInStudy" in query.returns:
        modalities = _modalities_of(session, sorted({str(r["_study"]) for r in rows}))
        for row in rows:
            row["ModalitiesInStudy"] = modalities.get(str(row["_study"]), [])
    return [Match({k: row.get(k) for k in query.returns}, str(row.get("_study") or ""), str(row["_patient"])) for row in rows]


def _identifies(keyword: str, value: str) -> ColumnElement[bool]:
    """A unique key's single value or list of UIDs, matched exactly (PS3.4 C.4.2.2.1)."""
    values = _uid_list(keyword, value)
    column = _COLUMNS[keyword]
    return column.in_(values) if len(values) > 1 else column == values[0]


def instances(session: Session, level: Level, keys: Mapping[str, str]) -> dict[str, list[ForwardItem]]:
    """The instances a retrieve identifier names (PS3.4 C.4.2.2.1), by study, in order.

    The unique key of `level` must be present (PS3.4 C.2.2.1.1); the unique keys of the levels
    above narrow it. Other keys are not used for a retrieve (C.2.2.1.2-3). Raises QueryError
    without the level's unique key.
    """
    if not keys.get(UNIQUE[level], "").strip():
        raise QueryError(f"a {level} level retrieve needs {UNIQUE[level]}")
    conditions = [
        _identifies(k, v) for k, v in keys.items() if k in UNIQUE.values() and supported(k, level) and v.strip()
    ]
    joined = _INSTANCES.join(_SERIES, _INSTANCES.c.series_uid == _SERIES.c.series_uid).join(
        _STUDIES, _INSTANCES.c.study_uid == _STUDIES.c.study_uid
    )
    columns = (_INSTANCES.c.study_uid, _INSTANCES.c.sop_uid, _INSTANCES.c.object_key, _INSTANCES.c.sop_class_uid)
    stmt = (
        select(*columns, _INSTANCES.c.transfer_syntax_uid)
        .select_from(joined)
        .where(*conditions)
        .order_by(*_ORDER["SERIES"], *_ORDER["IMAGE"])
    )
    found: dict[str, list[ForwardItem]] = {}
    for study_uid, sop_uid, key, sop_class, syntax in session.execute(stmt):
        found.setdefault(study_uid, []).append(ForwardItem(sop_uid, key, sop_class, syntax))
    return found
