"""Reading the header fields the index needs from a received instance, without loading its pixels.

header.scan reads them from the encoded data set; what it cannot follow, pydicom reads leniently.
An instance comes as a data set in a negotiated transfer syntax (C-STORE, after the file meta we
write) or as a whole DICOM file (STOW-RS parts, our own SR and SEG), whose file meta says where
its data set starts and how it is encoded.
"""

import re
import struct
from collections.abc import Mapping
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import ExplicitVRLittleEndian

from integration.errors import CannotUnderstand
from integration.instances import header
from integration.instances.inflate import DEFLATED, inflated
from storage.instances import ReceivedInstance, StudyDetails
from storage.objects import dicom_key
from storage.tables.index import Series, Study


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value).strip() if value is not None else ""


def _check_pixel_data(f: BinaryIO, size: int, *, implicit_vr: bool, little_endian: bool) -> None:
    # pydicom stops before Pixel Data without reading it, so a data set cut short inside its
    # pixels would otherwise look whole.
    try:
        header.check_bulk_data(f, size, implicit=implicit_vr, little_endian=little_endian)
    except header.Unsupported as exc:
        raise CannotUnderstand("dataset truncated inside its pixel data") from exc


# A deflated data set inflating past this is refused (a deflate bomb), unless the door sets its own bound.
MAX_INFLATED_BYTES = 256 << 20
# How much of an inflated data set is held in memory before it goes to a temporary file.
_INFLATED_IN_MEMORY = 8 << 20
# PS3.5 9.1: a UID is components of digits separated by dots, no component with a leading zero
# (a lone "0" is a component), at most 64 characters.
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_UID_MAX = 64
# pydicom leaves values longer than this unread (deferred), so the fallback never holds a large
# element before the pixel data (or a data set without any) in memory.
_DEFER = 1 << 16
_PARSE_ERRORS = (InvalidDicomError, ValueError, EOFError, KeyError, TypeError, OSError, struct.error)


def _with_pydicom(f: BinaryIO, size: int) -> dict[str, str]:
    """The wanted attributes as pydicom reads them, leniently, from the whole file (preamble and file meta first)."""
    f.seek(0)
    try:
        ds = dcmread(f, stop_before_pixels=True, force=True, specific_tags=list(header.WANTED.values()), defer_size=_DEFER)
        _check_pixel_data(f, size, implicit_vr=bool(ds.original_encoding[0]), little_endian=bool(ds.original_encoding[1]))
    except _PARSE_ERRORS as exc:
        raise CannotUnderstand(f"dataset cannot be parsed: {type(exc).__name__}") from exc
    return header_values(ds)


def _at_pixels(tag: int, vr: str | None, length: int) -> bool:
    return tag in header.BULK


def _inflated_values(f: BinaryIO, *, limit: int) -> dict[str, str]:
    """The wanted attributes of the deflated data set at `f`'s position, inflated with a bound (inflate.py)."""
    with inflated(f, limit=limit, memory_limit=_INFLATED_IN_MEMORY) as plain:
        size = plain.seek(0, 2)
        plain.seek(0)
        try:
            return header.scan(plain, size=size, transfer_syntax=ExplicitVRLittleEndian)  # type: ignore[arg-type]
        except header.Unsupported:
            plain.seek(0)
        try:
            wanted = [int(tag) for tag in header.WANTED]
            ds = read_dataset(plain, False, True, stop_when=_at_pixels, specific_tags=wanted, defer_size=_DEFER)  # type: ignore[arg-type]
            _check_pixel_data(plain, size, implicit_vr=False, little_endian=True)  # type: ignore[arg-type]
        except _PARSE_ERRORS as exc:
            raise CannotUnderstand(f"dataset cannot be parsed: {type(exc).__name__}") from exc
        return header_values(ds)


def check_uid(name: str, value: str) -> None:
    """Raise CannotUnderstand unless `value` is a UID as PS3.5 9.1 defines it (it becomes part of an object key)."""
    if len(value) > _UID_MAX:
        raise CannotUnderstand(f"{name} is longer than {_UID_MAX} characters (PS3.5 9.1)")
    if not _UID.fullmatch(value):
        raise CannotUnderstand(f"{name} is not digits and dots without leading zeros (PS3.5 9.1)")


def study_details(values: Mapping[str, str]) -> StudyDetails:
    """The patient and study attributes Query/Retrieve matches, from a header's values (header.WANTED)."""
    return StudyDetails(
        patient_name=values.get("PatientName", "")[:256],
        patient_birth_date=values.get("PatientBirthDate", "")[:8],
        patient_sex=values.get("PatientSex", "")[:16],
        study_time=values.get("StudyTime", ""),
        study_id=values.get("StudyID", "")[:16],
        referring_physician_name=values.get("ReferringPhysicianName", "")[:256],
    )


def header_values(ds: Dataset) -> dict[str, str]:
    """The header.WANTED attributes of a data set pydicom read, as text."""
    return {keyword: _text(ds, keyword) for keyword in header.WANTED.values()}


# IS values are signed 32-bit integers (PS3.5 6.2); the index's integer columns hold no more.
_IS_RANGE = range(-(2**31), 2**31)
# The index column each text of the header fills (storage.tables.index): its length bounds it.
_COLUMNS = {
    "PatientID": Study.patient_id,
    "AccessionNumber": Study.accession_number,
    "StudyDate": Study.study_date,
    "StudyDescription": Study.study_description,
    "Modality": Series.modality,
    "BodyPartExamined": Series.body_part,
    "SeriesDescription": Series.series_description,
    "PatientName": Study.patient_name,
    "PatientBirthDate": Study.patient_birth_date,
    "PatientSex": Study.patient_sex,
    "StudyTime": Study.study_time,
    "StudyID": Study.study_id,
    "ReferringPhysicianName": Study.referring_physician_name,
}


def _indexable(values: Mapping[str, str]) -> dict[str, str]:
    """The header's texts as the index can hold them: without NUL (PostgreSQL text cannot hold
    one) and cut to their column. Values past their VR's length (PS3.5 6.2) are invalid anyway;
    the stored object keeps every value as sent, only its index entry is cut."""
    fitted = dict(values)
    for keyword, column in _COLUMNS.items():
        if keyword in fitted:
            fitted[keyword] = fitted[keyword].replace("\x00", "")[: column.type.length]
    return fitted


def _int(value: str) -> int | None:
    try:
        number = int(value) if value else None
    except ValueError:
        return None  # a malformed IS value must not refuse an otherwise good instance
    return number if number is None or number in _IS_RANGE else None


def read_instance(
    f: BinaryIO,
    *,
    size: int,
    dataset_start: int,
    transfer_syntax: str,
    sha256: str,
    calling_ae: str,
    source_address: str,
    called_ae: str = "",
    derived: bool = False,
    max_inflated: int = MAX_INFLATED_BYTES,
) -> ReceivedInstance:
    """The index fields of the DICOM file `f` (`size` bytes; its data set at `dataset_start`, in `transfer_syntax`).

    Raises CannotUnderstand when the file is not DICOM, is cut short, inflates past
    `max_inflated` bytes, lacks the Study, Series or SOP Instance UID or has one that is not a
    UID, which the C-STORE edge answers with 0xC000 (PS3.4 Annex B.2.3) and STOW-RS with its
    failure reason. `derived` marks an instance we made from the study (an AI result, storage.instances).
    """
    f.seek(dataset_start)
    if transfer_syntax == DEFLATED:
        values = _inflated_values(f, limit=max_inflated)
    else:
        try:
            values = header.scan(f, size=size, transfer_syntax=transfer_syntax)
        except header.Unsupported:
            values = _with_pydicom(f, size)
    uids = {k: values.get(k, "") for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")}
    missing = [k for k, v in uids.items() if not v]
    if missing:
        raise CannotUnderstand(f"missing {', '.join(missing)}")
    # These three name the object (storage.objects.dicom_key): a "/", ".." or "\\" in one would
    # reach the key, so anything but a UID is refused here, before anything is stored.
    for name in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        check_uid(name, uids[name])
    values = _indexable(values)
    return ReceivedInstance(
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        sop_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        transfer_syntax_uid=transfer_syntax,
        patient_id=values.get("PatientID", ""),
        accession_number=values.get("AccessionNumber", ""),
        study_date=values.get("StudyDate", "")[:8],
        study_description=values.get("StudyDescription", "")[:256],
        modality=values.get("Modality", ""),
        body_part=values.get("BodyPartExamined", ""),
        series_number=_int(values.get("SeriesNumber", "")),
        series_description=values.get("SeriesDescription", "")[:256],
        instance_number=_int(values.get("InstanceNumber", "")),
        object_key=dicom_key(uids["StudyInstanceUID"], uids["SeriesInstanceUID"], uids["SOPInstanceUID"]),
        size=size,
        sha256=sha256,
        calling_ae=calling_ae,
        called_ae=called_ae,
        source_address=source_address,
        expected_instances=_int(values.get("NumberOfStudyRelatedInstances", "")),
        details=study_details(values),
        derived=derived,
    )


def read_file(
    f: BinaryIO,
    *,
    size: int,
    sha256: str,
    calling_ae: str,
    source_address: str,
    derived: bool = False,
    max_inflated: int = MAX_INFLATED_BYTES,
) -> ReceivedInstance:
    """The index fields of a whole DICOM file (PS3.10): its file meta says where its data set starts and how it is encoded.

    Raises CannotUnderstand when it has no File Meta Information (not a DICOM file), and as read_instance.
    """
    f.seek(0)
    try:
        dataset_start, transfer_syntax = header.read_file_meta(f, size)
    except header.Unsupported as exc:
        raise CannotUnderstand(f"not a DICOM file: {exc}") from exc
    return read_instance(
        f,
        size=size,
        dataset_start=dataset_start,
        transfer_syntax=transfer_syntax,
        sha256=sha256,
        calling_ae=calling_ae,
        source_address=source_address,
        derived=derived,
        max_inflated=max_inflated,
    )
