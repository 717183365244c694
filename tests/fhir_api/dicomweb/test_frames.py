"""Frames cut from stored bytes: single-bit frames that do not start on a byte boundary come out repacked."""

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from fhir_api.dicomweb import frames


def _binary_frames(masks: np.ndarray) -> bytes:
    """A DICOM file of single-bit frames (as a BINARY Segmentation holds them, PS3.3 C.8.20.2)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.NumberOfFrames, ds.Rows, ds.Columns = masks.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 1, 0
    ds.PhotometricInterpretation, ds.PixelRepresentation = "MONOCHROME2", 0
    packed = np.packbits(masks.ravel(), bitorder="little").tobytes()
    ds.PixelData = packed + b"\x00" * (len(packed) % 2)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_single_bit_frames_start_on_a_byte_of_their_own() -> None:
    masks = np.random.default_rng(7).integers(0, 2, size=(3, 5, 5), dtype=np.uint8)  # 25 bits a frame
    data = _binary_frames(masks)
    f = io.BytesIO(data)
    layout = frames.pixels(f, len(data))
    assert layout is not None and (layout.frames, layout.frame_bits, layout.encapsulated) == (3, 25, False)
    for number, frame in zip([2, 3, 1], frames.frames(f, layout, [2, 3, 1])):
        bits = np.unpackbits(np.frombuffer(frame, dtype=np.uint8), bitorder="little")[:25]
        assert (bits.reshape(5, 5) == masks[number - 1]).all()
