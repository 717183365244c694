"""A Query/Retrieve search, by C-FIND or QIDO-RS, run over the study index and audited in the same
transaction (DCM 110112 Query, PS3.15 A.5.3.14), as every disclosure is.

One record per study a search disclosed (per patient at the patient level), under the study's
correlation id, so "who saw this study" is one AuditEvent search; one record when nothing
matched. Records hold identifiers only: the keys searched on by name, with their values only for
identifiers (PS3.15 A.5: no names, birth dates or descriptions in the trail).
"""

from collections.abc import Mapping

from pydicom.dataset import Dataset
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit.log import append_many
from audit.records import DICOM_QUERIED, AuditRecord
from storage.db import session_scope
from storage.dicom_query import Match, Query, Value, count, find
from storage.instances import correlation_id_for_study

# Audit correlation id of searches that disclose no study.
QUERY_CORRELATION = "query"
# Keys whose values the trail keeps: identifiers, never names, dates of birth or free text.
_IDENTIFIERS = frozenset(
    {
        "PatientID",
        "AccessionNumber",
        "StudyID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SOPClassUID",
        "Modality",
        "ModalitiesInStudy",
    }
)


def described(keys: Mapping[str, str]) -> str:
    """The keys of a search as the trail keeps them: `PatientID=123,PatientName,StudyDate` (identifiers' values only)."""
    return ",".join(f"{k}={v}" if k in _IDENTIFIERS and v else k for k, v in sorted(keys.items()))[:1000]


def audit(session: Session, query: Query, matches: list[Match], *, who: str, address: str, via: str) -> None:
    """Append the records of one search (see the module's docstring)."""
    detail = {"via": via, "level": query.level, "keys": described(query.keys)}
    groups: dict[tuple[str, str], int] = {}
    for match in matches:
        groups[(match.study_uid, match.patient_id)] = groups.get((match.study_uid, match.patient_id), 0) + 1
    records = [
        AuditRecord(
            hop=DICOM_QUERIED,
            correlation_id=correlation_id_for_study(study) if study else QUERY_CORRELATION,
            agent_who=who,
            agent_address=address,
            entity_what=study or f"patient:{patient}",
            detail={**detail, "matches": str(count), "patient": patient},
        )
        for (study, patient), count in groups.items()
    ]
    nothing = AuditRecord(
        hop=DICOM_QUERIED,
        correlation_id=QUERY_CORRELATION,
        agent_who=who,
        agent_address=address,
        entity_what=query.level,
        detail={**detail, "matches": "0"},
    )
    append_many(session, records or [nothing])


def search(engine: Engine, query: Query, *, who: str, address: str, via: str, counted: bool = False) -> tuple[list[Match], int]:
    """Run `query` and audit what it disclosed, in one transaction; the matches, and how many match
    in all when `counted` and the page is full (else the number of matches returned).

    Raises storage.dicom_query.QueryError for keys it cannot match, StorageUnavailable when the
    database is down.
    """
    with session_scope(engine) as session:
        matches = find(session, query)
        full = counted and query.limit is not None and len(matches) == query.limit
        total = count(session, query) if full else query.offset + len(matches)
        audit(session, query, matches, who=who, address=address, via=via)
    return matches, total


def identifier(values: Mapping[str, Value]) -> Dataset:
    """One match's values as a data set (a C-FIND response identifier, a QIDO-RS result); None values are empty."""
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, "" if value is None else value)
    return ds

