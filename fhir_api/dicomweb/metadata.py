"""An instance's header as the DICOM JSON Model (PS3.18 F.2), its bulk data as BulkDataURIs (PS3.18 F.2.6).

Metadata resources answer every attribute but the bulk data: Pixel Data, and any other top-level
binary value (OB, OD, OF, OL, OV, OW, UN) longer than BULK_THRESHOLD, are given as a BulkDataURI
under the instance's URL (`.../bulkdata/{tag}`), which the bulk data resource answers. Binary
values nested in sequences (an icon image, say) are small and stay inline (InlineBinary).
"""

from typing import Any

from pydicom.dataset import Dataset

from fhir_api.dicomweb.accept import FRAME_MEDIA_TYPES

PIXEL_DATA = 0x7FE00010
# Available Transfer Syntax UID (0008,3002): how the instance is stored, so a client knows what it can ask for.
AVAILABLE_TRANSFER_SYNTAX = "00083002"
BULK_THRESHOLD = 1024
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
# Large enough that pydicom never makes a BulkDataURI itself: nested binary values stay inline.
_NEVER = 1 << 62


def bulk_tags(ds: Dataset) -> list[int]:
    """The top-level elements given by reference: long binary values (Pixel Data is never in a header read)."""
    return [
        int(element.tag)
        for element in ds
        if element.VR in _BINARY_VRS and isinstance(element.value, bytes) and len(element.value) > BULK_THRESHOLD
    ]


def _pixel_vr(ds: Dataset, transfer_syntax: str) -> str:
    # PS3.5 8.2: OB when encapsulated or at most 8 bits allocated, else OW.
    if transfer_syntax in FRAME_MEDIA_TYPES or int(ds.get("BitsAllocated", 16)) <= 8:
        return "OB"
    return "OW"


def instance_metadata(ds: Dataset, *, instance_url: str, transfer_syntax: str) -> dict[str, Any]:
    """The DICOM JSON object of one instance's header `ds` (read without its pixels), stored in `transfer_syntax`."""
    by_reference = bulk_tags(ds)
    thin = Dataset()
    thin.update({element.tag: element for element in ds if int(element.tag) not in by_reference})
    out: dict[str, Any] = thin.to_json_dict(bulk_data_threshold=_NEVER, suppress_invalid_tags=True)
    for tag in by_reference:
        out[f"{tag:08X}"] = {"vr": str(ds[tag].VR), "BulkDataURI": f"{instance_url}/bulkdata/{tag:08X}"}
    # The Image Pixel module (PS3.3 C.7.6.3): Rows comes with Pixel Data.
    if "Rows" in ds:
        out[f"{PIXEL_DATA:08X}"] = {
            "vr": _pixel_vr(ds, transfer_syntax),
            "BulkDataURI": f"{instance_url}/bulkdata/{PIXEL_DATA:08X}",
        }
    out[AVAILABLE_TRANSFER_SYNTAX] = {"vr": "UI", "Value": [transfer_syntax]}
    return dict(sorted(out.items()))
