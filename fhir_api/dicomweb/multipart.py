"""multipart/related bodies (RFC 2387 over RFC 2046 5.1): read as they arrive, and written part by part.

DICOMweb carries instances, frames and bulk data as the parts of a multipart/related message
(PS3.18 8.6.1.2). A STOW-RS body is parsed as its chunks arrive: each part's bytes are handed on
as they come, so no part and no body is ever held whole here. A WADO-RS answer is written one
part at a time, each preceded by its own headers.
"""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from fhir_api.errors import BadRequest

_CRLF = b"\r\n"
# Part headers are a line or two (Content-Type, Content-Location); more is not a DICOMweb part.
HEADERS_LIMIT = 16 * 1024


@dataclass(frozen=True)
class PartStart:
    """A part begins: its headers, names lower-cased (RFC 2046 5.1.1)."""

    headers: dict[str, str]


@dataclass(frozen=True)
class PartData:
    """Some of the current part's body."""

    data: bytes


@dataclass(frozen=True)
class PartEnd:
    """The current part is complete."""


Event = PartStart | PartData | PartEnd


def media_type(value: str) -> tuple[str, dict[str, str]]:
    """A Content-Type or Accept element split into its lower-cased media type and parameters (RFC 9110 8.3.1)."""
    kind, *rest = value.split(";")
    parameters = {}
    for item in rest:
        name, _, parameter = item.partition("=")
        if name.strip():
            parameters[name.strip().lower()] = parameter.strip().strip('"')
    return kind.strip().lower(), parameters


def _headers(block: bytes) -> dict[str, str]:
    headers = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers


class Parser:
    """A multipart body fed in chunks, giving back what each chunk completes.

    The delimiter is CRLF "--" boundary (RFC 2046 5.1.1); the first one may open the body without
    the CRLF. Bytes before it (the preamble) and after the close delimiter (the epilogue) are ignored.
    Raises BadRequest when the body is not multipart with this boundary, or ends before its close.
    """

    def __init__(self, boundary: str) -> None:
        self._dash_boundary = b"--" + boundary.encode("latin-1")
        self._delimiter = _CRLF + self._dash_boundary
        # The preamble is read as if it followed a line break, so a first boundary at byte 0 is found too.
        self._buffer = bytearray(_CRLF)
        self._state = "preamble"

    @property
    def done(self) -> bool:
        """Whether the close delimiter was read."""
        return self._state == "done"

    def feed(self, chunk: bytes) -> Iterator[Event]:
        """Take the next chunk of the body and yield the events it completes."""
        if self._state == "done":
            return  # the epilogue
        self._buffer += chunk
        while True:
            if self._state == "preamble":
                at = self._buffer.find(self._delimiter)
                if at < 0:
                    del self._buffer[: max(0, len(self._buffer) - len(self._delimiter))]
                    return
                del self._buffer[: at + len(self._delimiter)]
                self._state = "after-delimiter"
            elif self._state == "after-delimiter":
                if len(self._buffer) < 2:
                    return
                if self._buffer[:2] == b"--":
                    self._state = "done"
                    self._buffer.clear()
                    return
                line_end = self._buffer.find(_CRLF)
                if line_end < 0:
                    # Transport padding (whitespace) may follow a boundary before its line break.
                    if len(self._buffer) > 1024:
                        raise BadRequest("no line break after a multipart boundary")
                    return
                del self._buffer[: line_end + 2]
                self._state = "headers"
            elif self._state == "headers":
                end = self._buffer.find(_CRLF + _CRLF)
                # A part without headers starts at once with its body (RFC 2046 5.1.1: default type).
                if self._buffer[:2] == _CRLF:
                    end, skip = 0, 2
                else:
                    skip = 4
                if end < 0:
                    if len(self._buffer) > HEADERS_LIMIT:
                        raise BadRequest("multipart part headers too long")
                    return
                headers = _headers(bytes(self._buffer[:end]))
                del self._buffer[: end + skip]
                self._state = "body"
                yield PartStart(headers)
            else:  # body
                at = self._buffer.find(self._delimiter)
                if at < 0:
                    # Keep what could be the start of a delimiter split across chunks.
                    keep = len(self._delimiter) - 1
                    if len(self._buffer) > keep:
                        yield PartData(bytes(self._buffer[: len(self._buffer) - keep]))
                        del self._buffer[: len(self._buffer) - keep]
                    return
                if at:
                    yield PartData(bytes(self._buffer[:at]))
                del self._buffer[: at + len(self._delimiter)]
                self._state = "after-delimiter"
                yield PartEnd()

    def close(self) -> None:
        """The body ended: BadRequest unless its close delimiter was read."""
        if self._state != "done":
            raise BadRequest("the multipart body ends before its close delimiter")


def new_boundary() -> str:
    """A boundary no part's bytes will contain by chance (RFC 2046 5.1.1: up to 70 characters)."""
    return uuid.uuid4().hex


def content_type(part_type: str, boundary: str) -> str:
    """The Content-Type of a multipart/related answer whose parts are `part_type` (PS3.18 8.6.1.2)."""
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def part_head(boundary: str, part_content_type: str, *, first: bool, location: str = "") -> bytes:
    """The delimiter and headers that open one part (the CRLF before a delimiter closes the part before it)."""
    lines = [f"--{boundary}", f"Content-Type: {part_content_type}"]
    if location:
        lines.append(f"Content-Location: {location}")
    head = "\r\n".join(lines).encode("latin-1") + _CRLF + _CRLF
    return head if first else _CRLF + head


def close_delimiter(boundary: str, *, empty: bool) -> bytes:
    """The close delimiter that ends the message."""
    return (b"" if empty else _CRLF) + f"--{boundary}--".encode("latin-1") + _CRLF
