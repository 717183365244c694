"""Reading the header fields the index needs from an instance as received."""

import hashlib
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_listener.errors import CannotUnderstand
from storage.objects import dicom_key
from storage.queries import ReceivedInstance


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value).strip() if value is not None else ""


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None  # a malformed IS value must not refuse an otherwise good instance


def read_instance(data: bytes, *, calling_ae: str, source_address: str) -> ReceivedInstance:
    """Parse the header of `data` (a DICOM file: preamble, file meta, dataset) leniently.

    Raises CannotUnderstand when the bytes are not DICOM or lack the Study, Series or SOP
    Instance UID, which the C-STORE edge answers with 0xC000 (PS3.4 Annex B.2.3).
    """
    try:
        ds = dcmread(BytesIO(data), stop_before_pixels=True, force=True)
    except (InvalidDicomError, ValueError, EOFError, KeyError, TypeError) as exc:
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
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        calling_ae=calling_ae,
        source_address=source_address,
    )
