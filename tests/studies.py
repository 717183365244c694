"""An index holding pydicom-data's RG1_UNCR.dcm, and inference jobs on it: fixtures for tests that need a stored study.

The root conftest registers the fixtures; tests that need a study under another UID call `store_study`.
"""

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from sqlalchemy import Engine

from integration.messages import Coding, Finding, InferenceResult
from storage.db import make_engine, migrate, session_scope
from storage.objects import dicom_key
from storage.instances import ReceivedInstance, correlation_id_for_study, record_instance
from storage.jobs import create_job

PNEUMONIA = Coding(system="http://snomed.info/sct", code="233604007", display="Pneumonia")
REPORT_CODE = Coding(system="http://loinc.org", code="18748-4", display="Diagnostic imaging study")
RADIOLOGY = Coding(system="http://terminology.hl7.org/CodeSystem/v2-0074", code="RAD", display="Radiology")


# A CR instance of study 1.2.3 as the listener would record it, for tests of the index itself.
_RECEIVED = ReceivedInstance(
    study_uid="1.2.3",
    series_uid="1.2.3.1",
    sop_uid="1.2.3.1.1",
    sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
    transfer_syntax_uid="1.2.840.10008.1.2.1",
    patient_id="P1",
    accession_number="A1",
    study_date="20040826",
    study_description="chest",
    modality="CR",
    body_part="CHEST",
    series_number=1,
    series_description="",
    instance_number=1,
    object_key="dicom/1.2.3/1.2.3.1/1.2.3.1.1.dcm",
    size=10,
    sha256="a" * 64,
    calling_ae="PACS",
    source_address="127.0.0.1",
)


def received(**fields: Any) -> ReceivedInstance:
    """A received CR instance of study 1.2.3 (series 1.2.3.1, SOP 1.2.3.1.1) with `fields` changed."""
    return replace(_RECEIVED, **fields)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'doctorai.db'}"
    migrate(url)
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def rg1() -> ReceivedInstance:
    """The index fields of RG1_UNCR.dcm, as the listener would record them."""
    return rg1_instance()


def rg1_instance() -> ReceivedInstance:
    """The index fields of RG1_UNCR.dcm, as the listener would record them."""
    path = Path(str(get_testdata_file("RG1_UNCR.dcm")))
    ds = dcmread(path, stop_before_pixels=True)
    data = path.read_bytes()
    return ReceivedInstance(
        study_uid=ds.StudyInstanceUID,
        series_uid=ds.SeriesInstanceUID,
        sop_uid=ds.SOPInstanceUID,
        sop_class_uid=ds.SOPClassUID,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
        patient_id=ds.PatientID,
        accession_number=ds.get("AccessionNumber", ""),
        study_date=ds.get("StudyDate", ""),
        study_description=ds.get("StudyDescription", ""),
        modality=ds.Modality,
        body_part=ds.get("BodyPartExamined", ""),
        series_number=int(ds.SeriesNumber) if ds.get("SeriesNumber") is not None else None,
        series_description=ds.get("SeriesDescription", "") or "",
        instance_number=int(ds.InstanceNumber) if ds.get("InstanceNumber") is not None else None,
        object_key=dicom_key(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        calling_ae="MODALITY",
        source_address="127.0.0.1",
    )


def store_study(
    engine: Engine, rg1: ReceivedInstance, *, study_uid: str, status: str, revision: int = 1, **fields: Any
) -> ReceivedInstance:
    """RG1's header under another study UID (and series and SOP UIDs, and `fields`), indexed with this status."""
    item = replace(
        rg1,
        study_uid=study_uid,
        series_uid=f"{study_uid}.1",
        sop_uid=f"{study_uid}.1.1",
        object_key=dicom_key(study_uid, f"{study_uid}.1", f"{study_uid}.1.1"),
        **fields,
    )
    with session_scope(engine) as session:
        study = record_instance(session, item=item)
        study.status = status
        study.revision = revision
    return item


@pytest.fixture
def indexed(engine: Engine, rg1: ReceivedInstance) -> ReceivedInstance:
    """RG1 recorded in the index and declared ready at revision 1."""
    with session_scope(engine) as session:
        study = record_instance(session, item=rg1)
        study.status = "ready"
        study.revision = 1
    return rg1


@pytest.fixture
def make_job(engine: Engine, indexed: ReceivedInstance) -> Callable[..., InferenceResult]:
    """Create an inference job for the RG1 study and return its (successful) result."""

    def make(
        *,
        revision: int = 1,
        clinical_use: bool = False,
        error: str = "",
        probability: float = 0.87,
        model: str = "pneumonia-cxr",
    ) -> InferenceResult:
        job_id = str(uuid.uuid4())
        with session_scope(engine) as session:
            job = create_job(
                session,
                job_id=job_id,
                study_uid=indexed.study_uid,
                revision=revision,
                model=model,
                model_version="1.2.0",
            )
            assert job is not None
        return InferenceResult(
            correlation_id=correlation_id_for_study(indexed.study_uid),
            job_id=job_id,
            study_uid=indexed.study_uid,
            revision=revision,
            model=model,
            model_version="1.2.0",
            patient_id=indexed.patient_id,
            input_keys=[indexed.object_key],
            report_code=REPORT_CODE,
            report_category=RADIOLOGY,
            findings=[]
            if error
            else [Finding(concept=PNEUMONIA, probability=probability, threshold=0.5, positive=probability >= 0.5)],
            clinical_use=clinical_use,
            error=error,
            last_received_at=datetime.now(UTC),
        )

    return make
