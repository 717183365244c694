"""Study facts: a stored instance's header is read whole only up to a bound (issue 18)."""

from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from integration import facts
from storage.errors import ObjectTooLarge


class _Stored:
    """Fault injection: an object store holding one object, read from its start as the real one is."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.largest_read = 0

    def get_start(self, key: str, *, length: int) -> bytes:
        self.largest_read = max(self.largest_read, length)
        return self.data[:length]

    def get_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        raise AssertionError("the header is never read as a whole object")


def _instance(private_bytes: int) -> bytes:
    """CT_small with a private element of `private_bytes` before its pixel data."""
    ds = dcmread(str(get_testdata_file("CT_small.dcm")))
    block = ds.private_block(0x0009, "DOCTORAI TEST", create=True)
    block.add_new(0x01, "OB", b"\0" * private_bytes)
    out = BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_a_header_past_the_first_read_is_read_up_to_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(facts, "MAX_HEADER_BYTES", 600 * 1024)
    store = _Stored(_instance(400 * 1024))  # more than the first read (256 KiB), less than the bound
    header = facts.read_header(store, "k")  # type: ignore[arg-type]
    assert header.Modality == "CT" and "PixelData" not in header
    assert store.largest_read == 600 * 1024 + 1


def test_a_header_over_the_bound_fails_with_a_reason_not_a_whole_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(facts, "MAX_HEADER_BYTES", 300 * 1024)
    store = _Stored(_instance(400 * 1024) + b"\0" * (1024 * 1024))
    with pytest.raises(ObjectTooLarge, match="header of k is longer than 307200 bytes") as raised:
        facts.read_header(store, "k")  # type: ignore[arg-type]
    assert not raised.value.retriable  # the router's consumer dead-letters the study with this reason
    assert store.largest_read == 300 * 1024 + 1
