"""Our P-DATA-TF PDUs keep to the Maximum Length the peer announced (PS3.8 D.1)."""

import struct

from dicom_listener import pdus


def _pdvs(stream: bytes) -> list[tuple[int, int, bytes, int]]:
    """(context ID, control header, fragment, PDU length field) of each PDU, one PDV each."""
    out = []
    while stream:
        pdu_type, _, length = struct.unpack(">BBL", stream[:6])
        assert pdu_type == pdus.P_DATA_TF
        item_length, context_id, control = struct.unpack(">LBB", stream[6:12])
        out.append((context_id, control, stream[12 : 6 + 4 + item_length], length))
        stream = stream[6 + length :]
    return out


def test_a_command_fits_the_peers_maximum_length_and_is_one_pdu_without_one() -> None:
    command = bytes(range(256)) * 2
    (whole,) = _pdvs(pdus.p_data(5, command, max_length=0))
    assert whole[:3] == (5, 0x03, command)  # command, last fragment
    fragments = _pdvs(pdus.p_data(5, command, max_length=106))
    # Maximum Length bounds the PDU's variable field: the PDV items after its 6-byte header.
    assert all(pdu_length <= 106 for *_, pdu_length in fragments) and len(fragments) == 6
    assert [control for _, control, _, _ in fragments] == [0x01] * 5 + [0x03]
    assert b"".join(fragment for _, _, fragment, _ in fragments) == command
