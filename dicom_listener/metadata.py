"""Reading the header fields the index needs from a received instance, without loading its pixels."""

import struct
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_listener.errors import CannotUnderstand
from storage.objects import dicom_key
from storage.queries import ReceivedInstance

# Tags whose value usually ends the dataset and is too big to read just to check it (PS3.5 7.5).
_BULK_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
# Sequence Delimitation Item (FFFE,E0DD) with its zero length, little endian (PS3.5 7.5.2).
_SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


# The attributes the index keeps: pydicom converts only these (about half the parse time of all).
_INDEXED: list[str] = [
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "PatientID",
    "AccessionNumber",
    "StudyDate",
    "StudyDescription",
    "Modality",
    "BodyPartExamined",
    "SeriesNumber",
    "SeriesDescription",
    "InstanceNumber",
    "NumberOfStudyRelatedInstances",
]


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value).strip() if value is not None else ""


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None  # a malformed IS value must not refuse an otherwise good instance


def _check_bulk_data_complete(f: BinaryIO, size: int, *, implicit_vr: bool, little_endian: bool) -> None:
    """Raise CannotUnderstand when the element the header parse stopped at runs past the end of the file.

    pydicom stops before Pixel Data without reading it, so a dataset cut short inside its pixels
    would otherwise look whole. A defined length must fit in the file; so must every fragment
    of encapsulated pixel data (PS3.5 A.4).
    """
    start = f.tell()
    header = f.read(12)
    if len(header) < 8:
        return  # no bulk data element: pydicom read the whole dataset already
    endian = "<" if little_endian else ">"
    group, element = struct.unpack(endian + "HH", header[:4])
    if (group << 16 | element) not in _BULK_TAGS:
        return
    if implicit_vr:
        (length,), used = struct.unpack(endian + "L", header[4:8]), 8
    elif header[4:6] in _LONG_VRS:
        (length,), used = struct.unpack(endian + "L", header[8:12]), 12
    else:
        (length,), used = struct.unpack(endian + "H", header[6:8]), 8
    if length != 0xFFFFFFFF:
        if start + used + length > size:
            raise CannotUnderstand("dataset truncated inside its pixel data")
        return
    # Encapsulated: walk the fragment items by their headers, seeking over their values. An item
    # running past the end is a cut; a missing final delimiter alone is tolerated (some
    # real-world files end without it, and liberal in is the rule).
    position = start + used
    f.seek(position)
    while position + 8 <= size:
        item = f.read(8)
        if item == _SEQUENCE_END:
            return
        (item_length,) = struct.unpack(endian + "L", item[4:8])
        position += 8 + item_length
        if position > size:
            raise CannotUnderstand("dataset truncated inside its pixel data")
        f.seek(position)


def read_instance(
    f: BinaryIO, *, size: int, sha256: str, calling_ae: str, source_address: str, called_ae: str = ""
) -> ReceivedInstance:
    """Parse the header of the DICOM file `f` (preamble, file meta, dataset; `size` bytes) leniently.

    Raises CannotUnderstand when the file is not DICOM, is cut short, or lacks the Study, Series
    or SOP Instance UID, which the C-STORE edge answers with 0xC000 (PS3.4 Annex B.2.3).
    """
    try:
        ds = dcmread(f, stop_before_pixels=True, force=True, specific_tags=_INDEXED)
        _check_bulk_data_complete(f, size, implicit_vr=bool(ds.original_encoding[0]), little_endian=bool(ds.original_encoding[1]))
    except (InvalidDicomError, ValueError, EOFError, KeyError, TypeError, OSError, struct.error) as exc:
        raise CannotUnderstand(f"dataset cannot be parsed: {type(exc).__name__}") from exc
    uids = {k: _text(ds, k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")}
    missing = [k for k, v in uids.items() if not v]
    if missing:
        raise CannotUnderstand(f"missing {', '.join(missing)}")
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    return ReceivedInstance(
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        sop_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        transfer_syntax_uid=transfer_syntax,
        patient_id=_text(ds, "PatientID"),
        accession_number=_text(ds, "AccessionNumber"),
        study_date=_text(ds, "StudyDate")[:8],
        study_description=_text(ds, "StudyDescription")[:256],
        modality=_text(ds, "Modality"),
        body_part=_text(ds, "BodyPartExamined"),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription")[:256],
        instance_number=_int(ds, "InstanceNumber"),
        object_key=dicom_key(uids["StudyInstanceUID"], uids["SeriesInstanceUID"], uids["SOPInstanceUID"]),
        size=size,
        sha256=sha256,
        calling_ae=calling_ae,
        called_ae=called_ae,
        source_address=source_address,
        expected_instances=_int(ds, "NumberOfStudyRelatedInstances"),
    )
