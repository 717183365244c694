"""The spool: the stored object is a DICOM file pydicom reads, hashed as it arrives, in memory or in a file."""

import hashlib
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filereader import read_preamble

from integration.errors import InstanceTooLarge
from integration.instances.spool import IMPLEMENTATION_CLASS_UID, Spool, file_meta

CT = Path(str(get_testdata_file("CT_small.dcm")))


def _dataset_bytes() -> tuple[bytes, pydicom.Dataset]:
    source = pydicom.dcmread(CT)
    with CT.open("rb") as f:
        read_preamble(f, force=False)
        pydicom.filereader._read_file_meta_info(f)
        return f.read(), source


def _spooled(limit: int, directory: Path) -> tuple[Spool, bytes]:
    data, source = _dataset_bytes()
    head = file_meta(
        sop_class_uid=str(source.SOPClassUID),
        sop_instance_uid=str(source.SOPInstanceUID),
        transfer_syntax_uid=str(source.file_meta.TransferSyntaxUID),
    )
    spool = Spool(head, memory_limit=limit, directory=str(directory))
    for start in range(0, len(data), 4000):  # fragments, as P-DATA-TF PDUs bring them
        spool.write(memoryview(data)[start : start + 4000])
    return spool, head + data


def test_small_instances_stay_in_memory_and_read_back_as_the_file_sent(tmp_path: Path) -> None:
    spool, whole = _spooled(1 << 20, tmp_path)
    assert spool.path is None and spool.contents() == whole and spool.size == len(whole)
    assert spool.sha256 == hashlib.sha256(whole).hexdigest()
    stored = pydicom.dcmread(spool.open())
    source = pydicom.dcmread(CT)
    assert stored.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
    assert stored.file_meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
    assert stored.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert stored.PixelData == source.PixelData
    assert spool.dataset_start == len(whole) - len(_dataset_bytes()[0])


def test_large_instances_move_to_a_file_that_discard_deletes(tmp_path: Path) -> None:
    spool, whole = _spooled(10_000, tmp_path)
    path = spool.path
    assert path is not None and path.parent == tmp_path and path.read_bytes() == whole
    assert spool.sha256 == hashlib.sha256(whole).hexdigest()
    with spool.open() as f:
        assert pydicom.dcmread(f).PatientID == pydicom.dcmread(CT).PatientID
    spool.discard()
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_file_meta_is_even_and_explicit_little_endian() -> None:
    head = file_meta(sop_class_uid="1.2.3", sop_instance_uid="1.2.3.4.5", transfer_syntax_uid="1.2.840.10008.1.2")
    meta = pydicom.dcmread(io.BytesIO(head + b"\x08\x00\x16\x00\x06\x00\x00\x001.2.3\x00"), force=True).file_meta
    assert meta.MediaStorageSOPClassUID == "1.2.3" and meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert meta.FileMetaInformationGroupLength == len(head) - 132 - 12 and len(head) % 2 == 0


def test_a_data_set_past_the_limit_is_refused_as_it_arrives_and_dropped(tmp_path: Path) -> None:
    """Issue 18: the size of one instance was unbounded."""
    data, _ = _dataset_bytes()
    spool = Spool(b"head", memory_limit=0, directory=str(tmp_path), max_bytes=10000)
    with pytest.raises(InstanceTooLarge):
        for start in range(0, len(data), 4000):
            spool.write(memoryview(data)[start : start + 4000])
    assert spool.size <= 4 + 10000 and not any(tmp_path.iterdir())
