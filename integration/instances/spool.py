"""One received instance as it arrives: for C-STORE the file meta header we write, then the data set as sent;
for STOW-RS the DICOM file as sent (its head is empty).

The stored object is a DICOM file (PS3.10 7.1): 128-byte preamble, "DICM", file meta group
0002 in Explicit VR Little Endian, then the data set bytes exactly as received in the
negotiated transfer syntax, never re-encoded. A small instance stays in memory; past
`memory_limit` it moves to a temporary file, so a large one never costs more than that. Its
SHA-256 is computed as the fragments arrive, with no second pass over the bytes.
"""

import hashlib
import io
import struct
import tempfile
from pathlib import Path
from typing import IO, BinaryIO

from integration.errors import InstanceTooLarge

# DoctorAI's Implementation Class UID (PS3.7 D.3.3.2; a UUID-derived UID, PS3.5 B.2) and version name.
IMPLEMENTATION_CLASS_UID = "2.25.47017180139695480559876679108398971876"
IMPLEMENTATION_VERSION_NAME = "DOCTORAI_010"

_PREAMBLE = b"\x00" * 128 + b"DICM"


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "  # even lengths (PS3.5 7.1.1, 6.2)
    if vr == b"OB":
        return struct.pack("<HH2sHL", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def file_meta(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """Preamble, prefix and File Meta Information (PS3.10 7.1) for an instance we received."""
    group = b"".join(
        (
            _element(0x0001, b"OB", b"\x00\x01"),  # File Meta Information Version
            _element(0x0002, b"UI", sop_class_uid.encode()),
            _element(0x0003, b"UI", sop_instance_uid.encode()),
            _element(0x0010, b"UI", transfer_syntax_uid.encode()),
            _element(0x0012, b"UI", IMPLEMENTATION_CLASS_UID.encode()),
            _element(0x0013, b"SH", IMPLEMENTATION_VERSION_NAME.encode()),
        )
    )
    return _PREAMBLE + _element(0x0000, b"UL", struct.pack("<L", len(group))) + group


class Spool:
    """The bytes of one instance being received: in memory up to `memory_limit`, then in a file;
    refused (InstanceTooLarge) as soon as its data set passes `max_bytes` (0: no limit)."""

    def __init__(self, head: bytes, *, memory_limit: int, directory: str | None = None, max_bytes: int = 0) -> None:
        self._memory = bytearray(head)
        self._limit = memory_limit
        self._max = max_bytes
        self._directory = directory
        self._file: IO[bytes] | None = None
        self._whole: bytes | None = None
        self._digest = hashlib.sha256(head)
        self.size = len(head)
        # Where the data set starts: after our preamble and file meta.
        self.dataset_start = len(head)

    def write(self, data: memoryview | bytes) -> None:
        """Append a fragment of the data set; InstanceTooLarge once the data set passes `max_bytes` (nothing more is kept)."""
        if self._max and self.size + len(data) - self.dataset_start > self._max:
            self.discard()
            raise InstanceTooLarge(f"data set larger than {self._max} bytes")
        self._digest.update(data)
        self.size += len(data)
        if self._file is None:
            if self.size <= self._limit:
                self._memory += data
                return
            # Too big to hold: everything so far goes to a file, and the rest follows it there.
            self._file = tempfile.NamedTemporaryFile(dir=self._directory, prefix="doctorai-", suffix=".dcm", delete=False)
            self._file.write(self._memory)
            self._memory = bytearray()
        self._file.write(data)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of everything written so far (the whole object once the last fragment is in)."""
        return self._digest.hexdigest()

    @property
    def path(self) -> Path | None:
        """The file holding the object, or None while it is in memory."""
        if self._file is None:
            return None
        self._file.flush()
        return Path(self._file.name)

    def contents(self) -> bytes:
        """The whole object held in memory (only when `path` is None, after the last fragment)."""
        if self._whole is None:
            # Once, and then shared: readers (io.BytesIO) and the upload use this one copy.
            self._whole, self._memory = bytes(self._memory), bytearray()
        return self._whole

    def open(self) -> BinaryIO:
        """A fresh reader over the whole object, for parsing its header."""
        path = self.path
        return path.open("rb") if path is not None else io.BytesIO(self.contents())

    def discard(self) -> None:
        """Drop the bytes: free the memory, delete the file."""
        self._memory, self._whole = bytearray(), None
        if self._file is not None:
            self._file.close()
            Path(self._file.name).unlink(missing_ok=True)
            self._file = None
