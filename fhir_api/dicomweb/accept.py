"""What a WADO-RS client may ask for in Accept, and what we answer (PS3.18 8.7.3, 10.4.1.2).

Instances go out in their stored transfer syntax unless the client asks for another we can give:
`transfer-syntax=*`, no transfer-syntax parameter, or the stored syntax itself all mean the stored
bytes; Explicit VR Little Endian (1.2.840.10008.1.2.1) is also given for instances stored Implicit
VR Little Endian or Deflated Explicit VR Little Endian, re-encoded without touching the pixels.
Without a transfer-syntax parameter PS3.18 8.7.3.5.2 would default to Explicit VR Little Endian;
we answer the stored syntax instead (said in docs/dicom-conformance.md, 4.2.5.2), so compressed studies are never
decompressed by a request that did not ask. Anything else is 406 Not Acceptable.

Frames and pixel bulk data of uncompressed instances are application/octet-stream (little endian
native pixels); of compressed ones, the stored encapsulated frame in its own media type (PS3.18
Table 8.7.3-5: image/jpeg, image/jls, image/jp2, ...), or application/octet-stream when the client
asks for it with `transfer-syntax=*`. Instances stored big endian or deflated have no frames here.
"""

from dataclasses import dataclass

from fhir_api.dicomweb.multipart import media_type
from fhir_api.errors import NotAcceptable

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
# Stored syntaxes re-encoded as Explicit VR Little Endian on request: the elements change, the pixels do not.
TO_EXPLICIT = frozenset({IMPLICIT_VR_LE, DEFLATED_LE})
# Native (not encapsulated) pixels whose frames we cut straight out of the stored bytes.
NATIVE_LE = frozenset({IMPLICIT_VR_LE, EXPLICIT_VR_LE})
# PS3.18 Table 8.7.3-5: the media type of an encapsulated frame, by the stored transfer syntax.
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


@dataclass(frozen=True)
class Range:
    """One element of Accept: a media range, the part type and transfer syntax it names, its weight."""

    kind: str
    part_type: str
    transfer_syntax: str
    q: float


def ranges(accept: str | None) -> list[Range]:
    """The Accept header's media ranges, most wanted first (RFC 9110 12.5.1); none given is */*."""
    found = []
    for element in (accept or "*/*").split(","):
        if not element.strip():
            continue
        kind, parameters = media_type(element)
        try:
            q = float(parameters.get("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            found.append(Range(kind, parameters.get("type", "").lower(), parameters.get("transfer-syntax", ""), q))
    return sorted(found, key=lambda r: -r.q)


def _names_multipart(r: Range, part_type: str) -> bool:
    if r.kind in ("*/*", "multipart/*"):
        return True
    return r.kind == "multipart/related" and r.part_type in ("", "*/*", part_type, part_type.split("/")[0] + "/*")


@dataclass(frozen=True)
class Choice:
    """What one stored instance (or its frames) goes out as."""

    transfer_syntax: str
    part_type: str
    # The stored bytes are re-encoded (only ever to Explicit VR Little Endian).
    transcode: bool = False

    def content_type(self) -> str:
        """The part's Content-Type, naming its transfer syntax (PS3.18 8.7.3.3)."""
        return f"{self.part_type}; transfer-syntax={self.transfer_syntax}"


def instance_choice(wanted: list[Range], stored: str) -> Choice:
    """How an instance stored in `stored` answers a retrieve of instances; NotAcceptable when no range fits."""
    for r in wanted:
        if not _names_multipart(r, DICOM):
            continue
        if r.transfer_syntax in ("", "*", stored):
            return Choice(stored, DICOM)
        if r.transfer_syntax == EXPLICIT_VR_LE and stored in TO_EXPLICIT:
            return Choice(EXPLICIT_VR_LE, DICOM, transcode=True)
    raise NotAcceptable(
        f"instances stored in {stored} are given as multipart/related; type=\"application/dicom\" in their stored "
        f"transfer syntax (transfer-syntax=* or {stored}), or Explicit VR Little Endian from an uncompressed one"
    )


def frames_choice(wanted: list[Range], stored: str) -> Choice:
    """How the frames (or pixel bulk data) of an instance stored in `stored` go out; NotAcceptable when no range fits."""
    own = FRAME_MEDIA_TYPES.get(stored)
    for r in wanted:
        if stored in NATIVE_LE:
            if _names_multipart(r, OCTET_STREAM) and r.transfer_syntax in ("", "*", EXPLICIT_VR_LE):
                return Choice(EXPLICIT_VR_LE, OCTET_STREAM)
        elif own is not None:
            if _names_multipart(r, own) and r.part_type != OCTET_STREAM and r.transfer_syntax in ("", "*", stored):
                return Choice(stored, own)
            if r.kind == "multipart/related" and r.part_type == OCTET_STREAM and r.transfer_syntax == "*":
                return Choice(stored, OCTET_STREAM)
    what = f"{own} or application/octet-stream with transfer-syntax=*" if own else "application/octet-stream"
    raise NotAcceptable(f"frames of instances stored in {stored} are given as multipart/related; type={what}"
                        if own or stored in NATIVE_LE else f"instances stored in {stored} have no frames here")


def json_acceptable(wanted: list[Range]) -> None:
    """NotAcceptable unless the client takes application/dicom+json (metadata, a STOW-RS response; PS3.18 8.7.3)."""
    if not any(r.kind in (DICOM_JSON, "application/json", "application/*", "*/*") for r in wanted):
        raise NotAcceptable("this resource answers application/dicom+json (DICOM JSON) only")


def bulk_acceptable(wanted: list[Range]) -> None:
    """NotAcceptable unless the client takes bulk data as multipart/related application/octet-stream."""
    if not any(_names_multipart(r, OCTET_STREAM) for r in wanted):
        raise NotAcceptable("bulk data is given as multipart/related; type=\"application/octet-stream\"")
