"""Which representation a WADO-RS Accept header gets, for each way an instance can be stored."""

import pytest

from fhir_api.dicomweb import accept
from fhir_api.errors import NotAcceptable

IMPLICIT, EXPLICIT, J2K, RLE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5"
DICOM = 'multipart/related; type="application/dicom"'


@pytest.mark.parametrize(
    ("header", "stored", "expected"),
    [
        (None, J2K, accept.Choice(J2K, accept.DICOM)),
        (DICOM, J2K, accept.Choice(J2K, accept.DICOM)),
        (f"{DICOM}; transfer-syntax=*", IMPLICIT, accept.Choice(IMPLICIT, accept.DICOM)),
        (f"{DICOM}; transfer-syntax={EXPLICIT}", IMPLICIT, accept.Choice(EXPLICIT, accept.DICOM, transcode=True)),
        (f"{DICOM}; transfer-syntax={EXPLICIT}", EXPLICIT, accept.Choice(EXPLICIT, accept.DICOM)),
        # The most wanted range that can be given wins.
        (f"{DICOM}; transfer-syntax={J2K}; q=0.5, {DICOM}; transfer-syntax={EXPLICIT}", IMPLICIT,
         accept.Choice(EXPLICIT, accept.DICOM, transcode=True)),
    ],
)
def test_instances(header: str | None, stored: str, expected: accept.Choice) -> None:
    assert accept.instance_choice(accept.ranges(header), stored) == expected


@pytest.mark.parametrize(
    ("header", "stored"),
    [(f"{DICOM}; transfer-syntax={EXPLICIT}", J2K), ("application/dicom+json", EXPLICIT), (f"{DICOM}; q=0", EXPLICIT)],
)
def test_instances_not_acceptable(header: str, stored: str) -> None:
    with pytest.raises(NotAcceptable):
        accept.instance_choice(accept.ranges(header), stored)


@pytest.mark.parametrize(
    ("header", "stored", "expected"),
    [
        (None, EXPLICIT, accept.Choice(EXPLICIT, accept.OCTET_STREAM)),
        ('multipart/related; type="application/octet-stream"', IMPLICIT, accept.Choice(EXPLICIT, accept.OCTET_STREAM)),
        (None, J2K, accept.Choice(J2K, "image/jp2")),
        ('multipart/related; type="image/*"', RLE, accept.Choice(RLE, "image/dicom-rle")),
        ('multipart/related; type="application/octet-stream"; transfer-syntax=*', J2K, accept.Choice(J2K, accept.OCTET_STREAM)),
    ],
)
def test_frames(header: str | None, stored: str, expected: accept.Choice) -> None:
    assert accept.frames_choice(accept.ranges(header), stored) == expected


@pytest.mark.parametrize(
    ("header", "stored"),
    [
        ('multipart/related; type="application/octet-stream"', J2K),
        ('multipart/related; type="image/jpeg"', J2K),
        (None, "1.2.840.10008.1.2.2"),
    ],
)
def test_frames_not_acceptable(header: str | None, stored: str) -> None:
    with pytest.raises(NotAcceptable):
        accept.frames_choice(accept.ranges(header), stored)
