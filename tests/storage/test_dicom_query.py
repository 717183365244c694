"""The Query/Retrieve matching of PS3.4 C.2.2.2 over the study index, on SQLite and PostgreSQL alike."""

import pytest
from sqlalchemy import Engine

from storage.db import session_scope
from storage.dicom_query import Query, QueryError, count, find, instances
from storage.dicom_values import fold_name, index_time, parse_time
from storage.instances import StudyDetails, record_instance
from tests.studies import received


def _index(db: Engine) -> None:
    rows = [
        ("1.1", "P1", "Müller^Jörg", "20200110", "101500", "CT", "A_1%"),
        ("1.2", "P1", "Müller^Jörg", "20200220", "1830", "MR", "A[2]"),
        ("1.3", "P2", "müller^jorg", "", "", "CT", ""),  # no date, no time: matches any date or time (C.2.2.1.2)
        ("1.4", "", "Nobody^Known", "20220101", "000000.5", "US", "A4"),
    ]
    with session_scope(db) as session:
        for uid, patient, name, date, time, modality, accession in rows:
            item = received(
                study_uid=uid,
                series_uid=f"{uid}.1",
                sop_uid=f"{uid}.1.1",
                patient_id=patient,
                study_date=date,
                modality=modality,
                accession_number=accession,
                details=StudyDetails(patient_name=name, study_time=time),
            )
            record_instance(session, item=item)


def _studies(db: Engine, **keys: str) -> list[str]:
    with session_scope(db) as session:
        return sorted(m.values["StudyInstanceUID"] for m in find(session, Query("STUDY", keys, ["StudyInstanceUID"])))


def test_matching_types(db: Engine) -> None:
    _index(db)
    assert _studies(db, StudyInstanceUID="1.1\\1.4\\9.9") == ["1.1", "1.4"]  # list of UIDs
    assert _studies(db, PatientID="") == ["1.1", "1.2", "1.3", "1.4"]  # universal
    assert _studies(db, PatientID="P1") == ["1.1", "1.2", "1.4"]  # 1.4 has no Patient ID: it matches (C.2.2.1.2)
    assert _studies(db, PatientName="MULLER*") == ["1.1", "1.2", "1.3"]  # case- and accent-insensitive
    assert _studies(db, PatientName="M?ller^J?rg") == ["1.1", "1.2", "1.3"]
    assert _studies(db, PatientName="*") == ["1.1", "1.2", "1.3", "1.4"]
    # Wild cards in text are case-sensitive, and the database's own wild cards are literal.
    assert _studies(db, AccessionNumber="A_1%") == ["1.1", "1.3"]
    assert _studies(db, AccessionNumber="a*") == ["1.3"]
    assert _studies(db, AccessionNumber="A[2]") == ["1.2", "1.3"]
    assert _studies(db, AccessionNumber="A?") == ["1.3", "1.4"]
    # Ranges of dates and of times, by meaning.
    assert _studies(db, StudyDate="20200101-20200131") == ["1.1", "1.3"]
    assert _studies(db, StudyDate="-20200301") == ["1.1", "1.2", "1.3"]
    assert _studies(db, StudyDate="20210101-") == ["1.3", "1.4"]
    assert _studies(db, StudyTime="1015") == ["1.1", "1.3"]  # 10:15:00-10:15:59.999999
    assert _studies(db, StudyTime="1800-") == ["1.2", "1.3"]
    assert _studies(db, StudyTime="-000000") == ["1.3", "1.4"]  # 00:00:00.5 is within 00:00:00
    assert _studies(db, ModalitiesInStudy="MR\\US") == ["1.2", "1.4"]
    with pytest.raises(QueryError):
        _studies(db, StudyDate="2020-01")
    with pytest.raises(QueryError):
        _studies(db, StudyTime="25")
    for many in ("\\".join(f"1.{n}" for n in range(10_001)), "\\\\"):
        with pytest.raises(QueryError):
            _studies(db, StudyInstanceUID=many)
    with session_scope(db) as session, pytest.raises(QueryError):
        find(session, Query("IMAGE", {"InstanceNumber": "99999999999999999999"}, []))


def test_levels_counts_and_paging(db: Engine) -> None:
    _index(db)
    with session_scope(db) as session:
        patients = find(session, Query("PATIENT", {}, ["PatientID", "PatientName", "NumberOfPatientRelatedStudies"]))
        assert [m.values for m in patients] == [
            {"PatientID": "P1", "PatientName": "Müller^Jörg", "NumberOfPatientRelatedStudies": 2},
            {"PatientID": "P2", "PatientName": "müller^jorg", "NumberOfPatientRelatedStudies": 1},
        ]
        page = Query("IMAGE", {"Modality": "CT"}, ["SOPInstanceUID", "ModalitiesInStudy"], limit=1, offset=1)
        (second,) = find(session, page)
        assert second.values == {"SOPInstanceUID": "1.3.1.1", "ModalitiesInStudy": ["CT"]} and second.study_uid == "1.3"
        assert count(session, page) == 2
        with pytest.raises(QueryError):
            find(session, Query("STUDY", {"SOPInstanceUID": "1.1.1.1"}, []))  # below the level
        by_study = instances(session, "STUDY", {"StudyInstanceUID": "1.1\\1.2", "PatientName": "ignored"})
        assert {study: [i.sop_uid for i in items] for study, items in by_study.items()} == {"1.1": ["1.1.1.1"], "1.2": ["1.2.1.1"]}
        # A retrieve's unique keys are matched exactly: no study without a Patient ID comes with P1's.
        assert sorted(instances(session, "PATIENT", {"PatientID": "P1"})) == ["1.1", "1.2"]
        with pytest.raises(QueryError):
            instances(session, "SERIES", {"StudyInstanceUID": "1.1"})


def test_values_kept_for_matching() -> None:
    assert fold_name("Ångström^Zoë=ガ") == fold_name("ANGSTROM^ZOE=ガ")
    assert parse_time("1030") == ("103000", "103059.999999")
    assert parse_time("10:30:15.25") == ("103015.25", "103015.259999")
    assert parse_time("2500") is None
    assert index_time("1030") == "103000" and index_time("103000.5") == "103000.500000" and index_time("noon") == "noon"
