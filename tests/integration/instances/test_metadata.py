"""An instance's header values reach the index as its columns can hold them, on SQLite and PostgreSQL
(issue 18, the fault harness's data-set fuzzing: an InstanceNumber of 70 digits, a Modality of 70
characters or a PatientID with NUL in it failed the index transaction on PostgreSQL, and the
association was aborted with no status)."""

import hashlib
import io

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import Engine, select

from integration.errors import CannotUnderstand
from integration.instances.metadata import read_file
from storage.db import session_scope
from storage.instances import index_instance
from storage.tables.index import Instance, Series, Study


def _file(**values: str) -> bytes:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in values.items():
        ds.data_element(keyword).value = value  # type: ignore[union-attr]
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_odd_header_values_are_indexed_within_their_columns(db: Engine) -> None:
    raw = _file(
        InstanceNumber="9" * 70,
        Modality="M" * 70,
        PatientID="P\x00\x01" + "9" * 70,
        AccessionNumber="A" * 100,
        StudyDescription="\u00ff" * 300,
        PatientName="DOE^" + "J" * 400,
    )
    item = read_file(io.BytesIO(raw), size=len(raw), sha256=hashlib.sha256(raw).hexdigest(), calling_ae="FUZZ", source_address="127.0.0.1")
    assert item.instance_number is None  # past a 32-bit IS: no number, the instance still taken
    with session_scope(db) as session:
        index_instance(session, item=item)
    with session_scope(db) as session:
        study = session.scalars(select(Study).where(Study.study_uid == item.study_uid)).one()
        assert study.patient_id == "P\x01" + "9" * 62 and len(study.accession_number) == 64
        assert study.study_description == "\u00ff" * 256 and len(study.patient_name) == 256
        assert session.scalars(select(Series.modality).where(Series.study_uid == item.study_uid)).one() == "M" * 16
        assert session.scalars(select(Instance.instance_number).where(Instance.sop_uid == item.sop_uid)).one() is None


def test_a_sop_class_that_is_no_uid_is_not_understood() -> None:
    raw = _file(SOPClassUID="CT Image Storage, please")
    with pytest.raises(CannotUnderstand, match="SOPClassUID"):
        read_file(io.BytesIO(raw), size=len(raw), sha256="0" * 64, calling_ae="FUZZ", source_address="127.0.0.1")
