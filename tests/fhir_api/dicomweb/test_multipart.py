"""multipart/related parsed as it arrives, whatever the chunks, and written part by part."""

import pytest

from fhir_api.dicomweb import multipart
from fhir_api.errors import BadRequest

# Contents that look like the delimiter (CRLF "--bound") without being it, across any chunk split.
PARTS = [b"first part\r\n--not-the-boundary", b"", b"\r\n--boun" * 50 + b"--bound", bytes(range(256)) * 40]


def _written(parts: list[bytes], boundary: str) -> bytes:
    return b"".join(
        multipart.part_head(boundary, "application/dicom", first=n == 0) + part for n, part in enumerate(parts)
    ) + multipart.close_delimiter(boundary, empty=not parts)


def _parsed(body: bytes, boundary: str, chunk: int) -> list[tuple[dict[str, str], bytes]]:
    parser = multipart.Parser(boundary)
    found: list[tuple[dict[str, str], bytes]] = []
    for start in range(0, len(body), chunk):
        for event in parser.feed(body[start : start + chunk]):
            if isinstance(event, multipart.PartStart):
                found.append((event.headers, b""))
            elif isinstance(event, multipart.PartData):
                found[-1] = (found[-1][0], found[-1][1] + event.data)
    parser.close()
    return found


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000, 1 << 20])
def test_parts_come_back_whatever_the_chunks(chunk: int) -> None:
    body = b"a preamble to ignore\r\n" + _written(PARTS, "bound") + b"an epilogue to ignore"
    found = _parsed(body, "bound", chunk)
    assert [data for _, data in found] == PARTS
    assert all(headers == {"content-type": "application/dicom"} for headers, _ in found)


def test_a_part_without_headers_and_a_body_that_opens_with_its_boundary() -> None:
    body = b"--b\r\n\r\nno headers\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--"
    assert _parsed(body, "b", 5) == [({}, b"no headers"), ({"content-type": "text/plain"}, b"x")]


def test_a_body_cut_before_its_close_delimiter_is_a_bad_request() -> None:
    body = _written([b"abc"], "b")[:-8]
    with pytest.raises(BadRequest):
        _parsed(body, "b", 4)


def test_media_types_and_their_parameters() -> None:
    assert multipart.media_type('Multipart/Related; type="application/dicom"; boundary=abc') == (
        "multipart/related",
        {"type": "application/dicom", "boundary": "abc"},
    )
