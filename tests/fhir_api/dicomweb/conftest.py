"""The API with its DICOMweb routes on a migrated SQLite database and the session's real S3, one per test module,
and a study of real test files (native, multi-frame, JPEG 2000, RLE, implicit VR) stored into it by STOW-RS."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from doctorai.stack import StackConfig
from fhir_api.app import create_app
from fhir_api.config import ApiSettings
from storage.config import StorageSettings
from storage.db import make_engine, migrate
from storage.objects import make_object_store
from tests.fhir_api.conftest import Api, serving

# One file of each encoding the retrieve paths treat differently.
SOURCES = (
    "CT_small.dcm",  # Explicit VR Little Endian, one frame
    "emri_small.dcm",  # Explicit VR Little Endian, 10 frames
    "JPEG2000.dcm",  # encapsulated JPEG 2000
    "SC_rgb_rle_2frame.dcm",  # encapsulated RLE, 2 frames
    "MR_small_implicit.dcm",  # Implicit VR Little Endian
)
SCOPES = ["system/ImagingStudy.rs", "system/ImagingStudy.c"]


@dataclass
class DicomWeb:
    """The API serving DICOMweb, and what its tests share."""

    api: Api
    storage: StorageSettings

    def client(self, scopes: list[str] | None = None, *, subject: str = "viewer") -> DICOMwebClient:
        """dicomweb-client on /dicomweb with a token of these scopes."""
        return DICOMwebClient(f"{self.api.url}/dicomweb", headers=self.api.token(scopes or SCOPES, subject=subject))


@pytest.fixture(scope="module")
def dicomweb(services: StackConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DicomWeb]:
    """The API of this module's tests; small spool and instance limits so both paths run on small files."""
    url = f"sqlite:///{tmp_path_factory.mktemp('dicomweb') / 'db.sqlite'}"
    migrate(url)
    settings = ApiSettings(
        jwt_secret="dicomweb-test-secret-0123456789abcdef",
        dicomweb_spool_memory_bytes=16 * 1024,
        dicomweb_max_instance_bytes=1 << 20,
        rate_limit_per_second=0,
    )
    storage = StorageSettings(database_url=url, s3_endpoint=services.storage_settings().s3_endpoint)
    make_object_store(storage).ensure_bucket()
    engine = make_engine(url)
    try:
        with serving(create_app(settings, storage)) as base:
            yield DicomWeb(Api(url=base, engine=engine, settings=settings), storage)
    finally:
        engine.dispose()


def study_files(directory: Path, study_uid: str | None = None) -> dict[str, Path]:
    """SOURCES rewritten into one study (pixel data and encoding untouched), by SOPInstanceUID."""
    study_uid = study_uid or generate_uid()
    files = {}
    for name in SOURCES:
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.StudyInstanceUID = study_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.PatientID = "DICOMWEB-1"
        path = directory / name
        ds.save_as(path)
        files[str(ds.SOPInstanceUID)] = path
    return files
