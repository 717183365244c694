"""The frames of a stored instance, cut from its bytes without decoding them (PS3.18 10.4.1.2, Retrieve Frames).

Native pixel data (PS3.5 8.1) holds its frames one after another, each Rows x Columns x Samples
per Pixel x Bits Allocated bits; a frame of single-bit data (a binary Segmentation) need not start
on a byte boundary, so it is repacked to start on one. Encapsulated pixel data (PS3.5 A.4) holds
each frame in one or more fragments, found through the Basic (or Extended) Offset Table; a frame
goes out as stored, in its compressed form.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame

from fhir_api.errors import BadRequest, NotFound
from integration.instances import header


@dataclass(frozen=True)
class Pixels:
    """Where an instance's pixel data is in its file, and how it is laid out."""

    frames: int
    # Bits of one frame (native data only).
    frame_bits: int
    value_at: int
    length: int
    extended_offsets: tuple[bytes, bytes] | None

    @property
    def encapsulated(self) -> bool:
        """Whether the frames are compressed, in fragments (PS3.5 A.4)."""
        return self.length == header.UNDEFINED_LENGTH


def _frame_bits(ds: Dataset) -> int:
    return int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated)


def pixels(f: BinaryIO, size: int) -> Pixels | None:
    """The pixel data of the DICOM file in `f`; None when it has none (an SR, for instance)."""
    f.seek(0)
    ds = dcmread(f, stop_before_pixels=True, force=True)
    f.seek(0)
    try:
        start, syntax = header.read_file_meta(f, size)
        found = header.pixel_data_at(f, size=size, transfer_syntax=syntax)
    except header.Unsupported:
        return None  # big endian or deflated: accept.py gives no frames for them anyway
    if found is None or "Rows" not in ds:
        return None
    offsets = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        offsets = (bytes(ds.ExtendedOffsetTable), bytes(ds.ExtendedOffsetTableLengths))
    return Pixels(
        frames=int(ds.get("NumberOfFrames") or 1),
        frame_bits=_frame_bits(ds),
        value_at=found[0],
        length=found[1],
        extended_offsets=offsets,
    )


def parse_frame_list(text: str) -> list[int]:
    """The frame numbers of a `{frames}` path segment: comma-separated, 1-based (PS3.18 10.4.1.1.9)."""
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError as exc:
        raise BadRequest(f"frame list {text[:64]!r} is not a comma-separated list of frame numbers") from exc
    if not numbers or min(numbers) < 1:
        raise BadRequest("frame numbers start at 1")
    return numbers


def _native(f: BinaryIO, layout: Pixels, number: int) -> bytes:
    first_bit = (number - 1) * layout.frame_bits
    if first_bit % 8 == 0 and layout.frame_bits % 8 == 0:
        f.seek(layout.value_at + first_bit // 8)
        return f.read(layout.frame_bits // 8)
    # Single-bit data, packed least significant bit first across frames (PS3.5 8.1.1).
    f.seek(layout.value_at + first_bit // 8)
    span = f.read((first_bit % 8 + layout.frame_bits + 7) // 8)
    bits = np.unpackbits(np.frombuffer(span, dtype=np.uint8), bitorder="little")
    start = first_bit % 8
    return np.packbits(bits[start : start + layout.frame_bits], bitorder="little").tobytes()


def frames(f: BinaryIO, layout: Pixels, numbers: list[int]) -> Iterator[bytes]:
    """Each requested frame's bytes, in the order asked; NotFound for a frame the instance does not have."""
    missing = [n for n in numbers if n > layout.frames]
    if missing:
        raise NotFound(f"the instance has {layout.frames} frames, not frame {missing[0]}")
    for number in numbers:
        if not layout.encapsulated:
            yield _native(f, layout, number)
            continue
        f.seek(layout.value_at)
        yield get_frame(f, number - 1, number_of_frames=layout.frames, extended_offsets=layout.extended_offsets)

