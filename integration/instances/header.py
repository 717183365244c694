"""The few top-level attributes the index keeps, read straight from a data set's encoding (PS3.5 7).

This runs for every instance stored (C-STORE, STOW-RS). pydicom builds an element object for every attribute in the
header and converts the ones asked for, about 1 ms for a CT slice; walking the element headers
and reading only the wanted values takes a tenth of that. Anything this reader does not handle
(a deflated or big endian data set, an encoding it cannot follow, a cut) raises Unsupported,
and the caller reads the data set with pydicom instead, which decides how to answer.
"""

import struct
from collections.abc import Mapping
from typing import BinaryIO

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.uid import ImplicitVRLittleEndian
from pydicom.valuerep import PersonName

# The attributes wanted, by tag; all are at most a few hundred bytes long.
WANTED = {
    0x00080005: "SpecificCharacterSet",
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x00080020: "StudyDate",
    0x00080030: "StudyTime",
    0x00080050: "AccessionNumber",
    0x00080060: "Modality",
    0x00080090: "ReferringPhysicianName",
    0x00081030: "StudyDescription",
    0x0008103E: "SeriesDescription",
    0x00100010: "PatientName",
    0x00100020: "PatientID",
    0x00100030: "PatientBirthDate",
    0x00100040: "PatientSex",
    0x00180015: "BodyPartExamined",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00200010: "StudyID",
    0x00200011: "SeriesNumber",
    0x00200013: "InstanceNumber",
    0x00201208: "NumberOfStudyRelatedInstances",
}
# Person names: component groups decoded each on its own (PS3.5 6.2, 6.1.2.5.3).
_NAMES = {0x00080090, 0x00100010}
# Pixel Data and its float/double variants end the data set in practice (PS3.5 7.5, A.4).
BULK = {0x7FE00010, 0x7FE00008, 0x7FE00009}
# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
# A value length of 0xFFFFFFFF: undefined, ended by a delimiter (sequences, encapsulated pixel data, PS3.5 7.1).
UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
# Transfer syntaxes encoded as Explicit VR Little Endian (all the encapsulated ones are, PS3.5 A.4);
# deflated and big endian data sets go to pydicom.
_NOT_EXPLICIT_LE = {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"}


class Unsupported(Exception):
    """This reader cannot tell; pydicom must read the data set."""


class _Walk:
    """Element headers read one after another from a file positioned in a data set."""

    def __init__(self, f: BinaryIO, size: int, *, little_endian: bool = True) -> None:
        self.f = f
        self.size = size
        self.position = f.tell()
        endian = "<" if little_endian else ">"
        self._tag, self._u16, self._u32 = (struct.Struct(endian + c) for c in ("HH", "H", "L"))

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise Unsupported("data set cut short")
        self.position += n
        return data

    def skip(self, n: int) -> None:
        if self.position + n > self.size:
            raise Unsupported("value runs past the end")
        self.f.seek(n, 1)
        self.position += n

    def header(self, implicit: bool) -> tuple[int, bytes, int]:
        """The next element's tag, VR (b"" when implicit or for item tags) and value length."""
        group, element = self._tag.unpack(self.read(4))
        tag = group << 16 | element
        if implicit or group == 0xFFFE:  # items and delimiters never have a VR (PS3.5 7.5)
            return tag, b"", self._u32.unpack(self.read(4))[0]
        vr = self.read(2)
        if vr in _LONG_VRS:
            self.read(2)
            return tag, vr, self._u32.unpack(self.read(4))[0]
        if not vr.isalpha() or not vr.isupper():
            raise Unsupported("not explicit VR where the transfer syntax says so")
        return tag, vr, self._u16.unpack(self.read(2))[0]

    def skip_undefined(self, implicit: bool) -> None:
        """Past a sequence of undefined length: items until its Sequence Delimitation Item (PS3.5 7.5.2)."""
        while True:
            tag, _, length = self.header(implicit)
            if tag == _SEQUENCE_END:
                return
            if tag != _ITEM:
                raise Unsupported(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) inside a sequence")
            if length != UNDEFINED_LENGTH:
                self.skip(length)
                continue
            while True:  # an item of undefined length: its elements, until the Item Delimitation Item
                inner, vr, inner_length = self.header(implicit)
                if inner == _ITEM_END:
                    break
                if inner_length == UNDEFINED_LENGTH:
                    # A UN of undefined length holds Implicit VR Little Endian (PS3.5 6.2.2).
                    self.skip_undefined(implicit or vr == b"UN")
                else:
                    self.skip(inner_length)

    def check_bulk(self, length: int) -> None:
        """Pixel data must be whole: its defined length, or every fragment (PS3.5 A.4), inside the file."""
        if length != UNDEFINED_LENGTH:
            self.skip(length)
            return
        while self.position + 8 <= self.size:
            tag, _, fragment = self.header(True)
            if tag == _SEQUENCE_END:
                return
            self.skip(fragment)
        # A missing final delimiter alone is tolerated (liberal in); a cut fragment is not (above).


def _top_level(
    f: BinaryIO, size: int, transfer_syntax: str, wanted: Mapping[int, str]
) -> tuple[dict[int, bytes], _Walk, int, int]:
    """The `wanted` top-level values up to the bulk pixel data, by tag; and the walk, left at the bulk
    element's value, with that element's tag and value length (tag 0 when there is none)."""
    if transfer_syntax in _NOT_EXPLICIT_LE:
        raise Unsupported(f"transfer syntax {transfer_syntax}")
    implicit = transfer_syntax == ImplicitVRLittleEndian
    walk = _Walk(f, size)
    raw: dict[int, bytes] = {}
    while walk.position < size:
        tag, vr, length = walk.header(implicit)
        if tag in BULK:
            return raw, walk, tag, length
        if length == UNDEFINED_LENGTH:
            walk.skip_undefined(implicit or vr == b"UN")
        elif tag in wanted:
            if length > 1024:
                raise Unsupported(f"{wanted[tag]} of {length} bytes")
            raw[tag] = walk.read(length)
        else:
            walk.skip(length)
    return raw, walk, 0, 0


def scan(f: BinaryIO, *, size: int, transfer_syntax: str) -> dict[str, str]:
    """The wanted attributes present in the data set that starts at `f`'s position, as text.

    Checks that the pixel data, if any, is whole. Raises Unsupported when pydicom must decide.
    """
    raw, walk, bulk, length = _top_level(f, size, transfer_syntax, WANTED)
    if bulk:
        walk.check_bulk(length)
    encodings = convert_encodings(_ascii(raw.get(0x00080005, b"")).split("\\") or [""])
    values = {}
    for tag, value in raw.items():
        # UIDs are ASCII padded with NUL (PS3.5 9.1); other text is in the data set's character set.
        if WANTED[tag].endswith("UID"):
            text = _ascii(value)
        elif tag in _NAMES:
            text = str(PersonName(value, encodings).decode())
        else:
            text = decode_bytes(value, encodings, set())
        values[WANTED[tag]] = text.strip("\x00 ")
    return values


def read_file_meta(f: BinaryIO, size: int) -> tuple[int, str]:
    """Where the data set of the DICOM file in `f` starts, and its Transfer Syntax UID (PS3.10 7.1).

    The File Meta Information (group 0002) is Explicit VR Little Endian after the 128-byte preamble
    and "DICM"; a file without the preamble is read from its first byte (liberal in). Raises
    Unsupported when there is no group 0002 with a Transfer Syntax UID: not a DICOM file.
    """
    start = 132 if f.read(132)[128:] == b"DICM" else 0
    f.seek(start)
    walk = _Walk(f, size)
    syntax = ""
    while walk.position + 8 <= size:
        # Peek at the group: the data set after group 0002 may be in another encoding.
        if f.read(2) != b"\x02\x00":
            f.seek(walk.position)
            break
        f.seek(walk.position)
        tag, _, length = walk.header(False)
        if tag == 0x00020010 and length <= 64:
            syntax = _ascii(walk.read(length))
        else:
            walk.skip(length)
    if not syntax:
        raise Unsupported("no File Meta Information with a Transfer Syntax UID")
    return walk.position, syntax


def pixel_data_at(f: BinaryIO, *, size: int, transfer_syntax: str) -> tuple[int, int] | None:
    """Where the Pixel Data value of the data set at `f`'s position starts, and its length (0xFFFFFFFF when
    encapsulated, PS3.5 A.4); None without Pixel Data. Raises Unsupported as scan does."""
    _, walk, bulk, length = _top_level(f, size, transfer_syntax, {})
    return (walk.position, length) if bulk == 0x7FE00010 else None


def check_bulk_data(f: BinaryIO, size: int, *, implicit: bool, little_endian: bool) -> None:
    """When `f` is at Pixel Data (where pydicom stops before pixels), check it is whole; Unsupported when cut."""
    walk = _Walk(f, size, little_endian=little_endian)
    if walk.position + 8 > size:
        return  # nothing after the header: pydicom read the whole data set
    tag, _, length = walk.header(implicit)
    if tag in BULK:
        walk.check_bulk(length)


def _ascii(value: bytes) -> str:
    return value.decode("ascii", errors="replace").strip("\x00 ")
