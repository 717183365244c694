"""header.scan against pydicom: the same index values from every test file it reads, Unsupported for the rest."""

import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import _read_file_meta_info
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from integration.instances import header

NUMBERS = {"SeriesNumber", "InstanceNumber", "NumberOfStudyRelatedInstances"}


def _dataset_start(data: bytes) -> int:
    f = io.BytesIO(data)
    if f.read(132)[128:] != b"DICM":
        f.seek(0)
    _read_file_meta_info(f)
    return f.tell()


def _expected(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    text = str(value).strip() if value is not None else ""
    return str(int(float(text))) if keyword in NUMBERS and text else text


def _scan(data: bytes, syntax: str) -> dict[str, str]:
    f = io.BytesIO(data)
    f.seek(_dataset_start(data))
    return header.scan(f, size=len(data), transfer_syntax=syntax)


def _files() -> list[Path]:
    # pydicom's own test files and pydicom-data's, by folder (get_testdata_files takes seconds).
    folders = {Path(str(get_testdata_file(name))).parent for name in ("CT_small.dcm", "RG1_UNCR.dcm")}
    return sorted(p for folder in folders for p in folder.glob("*.dcm"))


def test_scan_reads_what_pydicom_reads_from_every_test_file() -> None:
    scanned = unsupported = 0
    for path in _files():
        data = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
                syntax = str(ds.file_meta.TransferSyntaxUID)
            except Exception:  # noqa: BLE001 - files pydicom itself cannot read are not this test's concern
                continue
            try:
                values = _scan(data, syntax)
            except header.Unsupported:
                unsupported += 1
                continue
        scanned += 1
        for keyword in header.WANTED.values():
            if keyword == "SpecificCharacterSet":
                continue
            got = values.get(keyword, "")
            if keyword in NUMBERS and got:
                got = str(int(float(got)))
            assert got == _expected(ds, keyword), (path.name, keyword)
    # Most files take the fast path; deflated, big endian and cut ones go to pydicom.
    assert scanned > 100 and unsupported < scanned / 4


def _ct_with(**attributes: object) -> tuple[bytes, str]:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), str(ds.file_meta.TransferSyntaxUID)


def test_text_is_decoded_in_the_specific_character_set() -> None:
    data, syntax = _ct_with(SpecificCharacterSet="ISO_IR 192", PatientID="Müller-Ø", StudyDescription="Thorax ÄÖ")
    values = _scan(data, syntax)
    assert values["PatientID"] == "Müller-Ø" and values["StudyDescription"] == "Thorax ÄÖ"


def test_sequences_of_undefined_length_are_walked_past() -> None:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "T-D3000", "SRT", "Chest"
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = generate_uid()
    item.ReferencedImageSequence = Sequence([inner])
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", generate_uid()
    ds.AnatomicRegionSequence = Sequence([item])  # (0008,2218), before the UIDs of group 0020
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = generate_uid(), generate_uid(), "SEQ1"
    ds.BitsAllocated, ds.PixelData = 8, b"\x00" * 64
    for element in (ds["AnatomicRegionSequence"], item["ReferencedImageSequence"]):
        element.is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    for syntax in (ImplicitVRLittleEndian, ExplicitVRLittleEndian):
        ds.file_meta.TransferSyntaxUID = syntax
        out = io.BytesIO()
        ds.save_as(out, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True)
        assert b"\xfe\xff\x0d\xe0" in out.getvalue()  # an Item Delimitation Item: undefined lengths were written
        values = _scan(out.getvalue(), syntax)
        assert values["StudyInstanceUID"] == ds.StudyInstanceUID and values["PatientID"] == "SEQ1"


def test_cut_pixel_data_and_other_encodings_are_left_to_pydicom() -> None:
    data, syntax = _ct_with()
    with pytest.raises(header.Unsupported):
        _scan(data[:-1000], syntax)  # inside the pixel data
    j2k = Path(str(get_testdata_file("RG1_J2KR.dcm"))).read_bytes()
    with pytest.raises(header.Unsupported):
        _scan(j2k[: len(j2k) // 2], "1.2.840.10008.1.2.4.90")  # inside a fragment
    with pytest.raises(header.Unsupported):
        _scan(data, "1.2.840.10008.1.2.1.99")  # deflated
