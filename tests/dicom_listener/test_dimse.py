"""Command sets: what pynetdicom encodes as an SCU we decode; what we encode, pydicom reads as PS3.7 says."""

import io

import pytest
from pydicom.filereader import read_dataset
from pydicom.uid import generate_uid
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE

from dicom_listener import dimse
from dicom_listener.errors import ProtocolError

CT = "1.2.840.10008.5.1.4.1.1.2"


def _encoded(message: C_STORE_RQ | C_ECHO_RQ) -> bytes:
    # The command set is the command fragments of the PDVs pynetdicom would send (PS3.8 E.2):
    # each PDV is [context ID, message control header + fragment].
    pdvs = [pdv for p_data in message.encode_msg(1, 16384) for pdv in p_data.presentation_data_value_list]
    return b"".join(value[1:] for _, value in pdvs if value[0] & 0x01)


def test_a_c_store_request_from_pynetdicom() -> None:
    uid = generate_uid()
    primitive = C_STORE()
    primitive.MessageID, primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID = 7, CT, uid
    primitive.Priority, primitive.MoveOriginatorApplicationEntityTitle = 2, "ORIGIN"
    primitive.DataSet = io.BytesIO(b"\x00" * 8)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    command = dimse.decode(_encoded(message))
    assert command == dimse.Command(
        command_field=dimse.C_STORE_RQ,
        message_id=7,
        has_data_set=True,
        affected_sop_class_uid=CT,
        affected_sop_instance_uid=uid,
        move_originator_ae_title="ORIGIN",
    )


def test_a_c_echo_request_has_no_data_set() -> None:
    primitive = C_ECHO()
    primitive.MessageID, primitive.AffectedSOPClassUID = 3, "1.2.840.10008.1.1"
    message = C_ECHO_RQ()
    message.primitive_to_message(primitive)
    command = dimse.decode(_encoded(message))
    assert (command.command_field, command.message_id, command.has_data_set) == (dimse.C_ECHO_RQ, 3, False)


def test_our_response_reads_back_as_the_standard_says() -> None:
    request = dimse.Command(dimse.C_STORE_RQ, 9, True, CT, "1.2.3.45")
    encoded = dimse.response(request, 0xA700, "Storage unavailable, retry later" + "!" * 60)
    ds = read_dataset(io.BytesIO(encoded), is_implicit_VR=True, is_little_endian=True)
    assert ds.CommandGroupLength == len(encoded) - 12  # everything after the group length element
    assert (ds.CommandField, ds.MessageIDBeingRespondedTo, ds.CommandDataSetType) == (0x8001, 9, 0x0101)
    assert (ds.Status, ds.AffectedSOPClassUID, ds.AffectedSOPInstanceUID) == (0xA700, CT, "1.2.3.45")
    assert len(ds.ErrorComment) == 64 and len(encoded) % 2 == 0


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x00\x04",  # cut inside an element header
        b"\x08\x00\x16\x00\x02\x00\x00\x00ab",  # group 0008 in a command set
        b"\x00\x00\x00\x01\x10\x00\x00\x00ab",  # value length past the end
        b"\x00\x00\x00\x01\x02\x00\x00\x00\x01\x00",  # no Message ID
    ],
)
def test_malformed_command_sets_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        dimse.decode(data)


def test_an_n_set_response_names_the_requested_instance_as_affected() -> None:
    request = dimse.Command(dimse.N_SET_RQ, 4, True, requested_sop_class_uid="1.2.840.10008.3.1.2.3.3", requested_sop_instance_uid="1.2.9")
    ds = read_dataset(io.BytesIO(dimse.response(request, 0x0000)), is_implicit_VR=True, is_little_endian=True)
    assert (ds.CommandField, ds.AffectedSOPClassUID, ds.AffectedSOPInstanceUID) == (0x8120, "1.2.840.10008.3.1.2.3.3", "1.2.9")
    created = dimse.Command(dimse.N_CREATE_RQ, 5, True, affected_sop_class_uid="1.2.840.10008.3.1.2.3.3")
    ds = read_dataset(io.BytesIO(dimse.response(created, 0x0000, instance_uid="2.25.7")), is_implicit_VR=True, is_little_endian=True)
    assert (ds.CommandField, ds.AffectedSOPInstanceUID) == (0x8140, "2.25.7")


def test_a_c_cancel_names_the_operation_it_cancels() -> None:
    from pynetdicom.dimse_messages import C_CANCEL_RQ
    from pynetdicom.dimse_primitives import C_CANCEL

    primitive = C_CANCEL()
    primitive.MessageIDBeingRespondedTo = 12
    message = C_CANCEL_RQ()
    message.primitive_to_message(primitive)
    command = dimse.decode(_encoded(message))  # type: ignore[arg-type]
    assert (command.command_field, command.message_id_being_responded_to, command.is_response) == (dimse.C_CANCEL_RQ, 12, False)


def test_a_retrieve_response_carries_its_counts_and_an_identifier_flag() -> None:
    move = dimse.Command(dimse.C_MOVE_RQ, 3, True, "1.2.840.10008.5.1.4.1.2.2.2", move_destination="STORESCP")
    encoded = dimse.response(move, 0xB000, data_set=True, counts=dimse.SubOperations(None, 2, 1, 0))
    ds = read_dataset(io.BytesIO(encoded), is_implicit_VR=True, is_little_endian=True)
    assert (ds.CommandField, ds.Status, ds.CommandDataSetType) == (0x8021, 0xB000, dimse.DATA_SET)
    assert (ds.NumberOfCompletedSuboperations, ds.NumberOfFailedSuboperations, ds.NumberOfWarningSuboperations) == (2, 1, 0)
    assert "NumberOfRemainingSuboperations" not in ds  # a final response has none (PS3.4 C.4.2.1.6)
    # A C-STORE-RSP from the requester of a C-GET decodes as a response.
    answer = dimse.decode(dimse.response(dimse.Command(dimse.C_STORE_RQ, 9, True, CT, "1.2.3"), 0x0000))
    assert answer.is_response and (answer.message_id_being_responded_to, answer.status) == (9, 0x0000)


def test_our_requests_read_back_as_the_standard_says() -> None:
    store = read_dataset(io.BytesIO(dimse.c_store_request(4, CT, "1.2.3.4")), is_implicit_VR=True, is_little_endian=True)
    assert (store.CommandField, store.MessageID, store.AffectedSOPInstanceUID, store.Priority) == (0x0001, 4, "1.2.3.4", 0)
    assert store.CommandDataSetType != dimse.NO_DATA_SET
    report = dimse.n_event_report_request(5, "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1", 2)
    ds = read_dataset(io.BytesIO(report), is_implicit_VR=True, is_little_endian=True)
    assert (ds.CommandField, ds.EventTypeID, ds.AffectedSOPInstanceUID) == (0x0100, 2, "1.2.840.10008.1.20.1.1")
