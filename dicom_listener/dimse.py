"""DIMSE command sets: decoding the requests we serve and the responses to the requests we make,
encoding our responses and requests (PS3.7 6.3, 9.3, 10.3, Annex E).

A command set is group 0000 only, always Implicit VR Little Endian (PS3.7 6.3.1), so a few
struct calls read and write it; the data set that may follow is never decoded here. We make
requests on an association we accepted for C-GET (its C-STORE sub-operations, PS3.4 C.4.3.3)
and for Storage Commitment (its N-EVENT-REPORT, PS3.4 J.3.3).
"""

import struct
from dataclasses import dataclass

from dicom_listener.errors import ProtocolError
from dicom_listener.pdus import REASON_INVALID_PARAMETER

C_STORE_RQ = 0x0001
C_GET_RQ = 0x0010
C_FIND_RQ = 0x0020
C_MOVE_RQ = 0x0021
C_ECHO_RQ = 0x0030
N_EVENT_REPORT_RQ = 0x0100
N_SET_RQ = 0x0120
N_ACTION_RQ = 0x0130
N_CREATE_RQ = 0x0140
C_CANCEL_RQ = 0x0FFF
RESPONSE = 0x8000  # a response's Command Field is its request's with bit 15 set (PS3.7 E.1)
# (0000,0800) Command Data Set Type: 0101H means no data set follows, any other value that one does (PS3.7 E.1).
NO_DATA_SET = 0x0101
DATA_SET = 0x0102
# (0000,0700) Priority: MEDIUM, the one our requests have (PS3.7 E.1).
MEDIUM = 0x0000

_ELEMENT = struct.Struct("<HHL")
_US = struct.Struct("<H")

AFFECTED_SOP_CLASS_UID = 0x0002
REQUESTED_SOP_CLASS_UID = 0x0003
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
MESSAGE_ID_BEING_RESPONDED_TO = 0x0120
MOVE_DESTINATION = 0x0600
PRIORITY = 0x0700
COMMAND_DATA_SET_TYPE = 0x0800
STATUS = 0x0900
ERROR_COMMENT = 0x0902
AFFECTED_SOP_INSTANCE_UID = 0x1000
REQUESTED_SOP_INSTANCE_UID = 0x1001
EVENT_TYPE_ID = 0x1002
ACTION_TYPE_ID = 0x1008
REMAINING = 0x1020
COMPLETED = 0x1021
FAILED = 0x1022
WARNING = 0x1023
MOVE_ORIGINATOR_AE_TITLE = 0x1030
MOVE_ORIGINATOR_MESSAGE_ID = 0x1031


@dataclass(frozen=True)
class Command:
    """The fields of a command set that we act on: a request's, or a response's to a request of ours."""

    command_field: int
    message_id: int  # 0 in a response
    has_data_set: bool
    affected_sop_class_uid: str = ""
    affected_sop_instance_uid: str = ""
    move_originator_ae_title: str = ""
    # N-SET and N-ACTION name the instance they act on as "requested" (PS3.7 10.1.1.1, 10.1.4.1).
    requested_sop_class_uid: str = ""
    requested_sop_instance_uid: str = ""
    # C-MOVE's destination AE title (PS3.7 9.1.4.1.4); N-ACTION's action type (10.1.4.1.3).
    move_destination: str = ""
    action_type_id: int = 0
    # In a response: the request answered and its status (PS3.7 9.3, 10.3).
    message_id_being_responded_to: int = 0
    status: int = 0

    @property
    def is_response(self) -> bool:
        """A response (bit 15 of the Command Field set, PS3.7 E.1), not a request."""
        return bool(self.command_field & RESPONSE)

    @property
    def sop_class_uid(self) -> str:
        """The SOP class the request is about, however it names it."""
        return self.affected_sop_class_uid or self.requested_sop_class_uid

    @property
    def sop_instance_uid(self) -> str:
        """The SOP instance the request is about, however it names it."""
        return self.affected_sop_instance_uid or self.requested_sop_instance_uid


def _text(value: bytes) -> str:
    return value.decode("ascii", errors="replace").rstrip("\x00 ")


def _us(value: bytes, tag: int) -> int:
    if len(value) != 2:
        raise ProtocolError(f"command element (0000,{tag:04X}) is not US", reason=REASON_INVALID_PARAMETER)
    return int(_US.unpack(value)[0])


def decode(data: bytes) -> Command:
    """Decode a whole command set. Raises ProtocolError when it is malformed or lacks a required element."""
    elements: dict[int, bytes] = {}
    offset = 0
    while offset < len(data):
        if offset + 8 > len(data):
            raise ProtocolError("command set ends inside an element header", reason=REASON_INVALID_PARAMETER)
        group, element, length = _ELEMENT.unpack_from(data, offset)
        offset += 8
        if group != 0 or offset + length > len(data):
            raise ProtocolError("command set element outside group 0000 or past its end", reason=REASON_INVALID_PARAMETER)
        elements[element] = data[offset : offset + length]
        offset += length
    try:
        command_field = _us(elements[COMMAND_FIELD], COMMAND_FIELD)
        # A request carries its Message ID, a response the one it answers and its Status, and a
        # C-CANCEL the Message ID of the operation it cancels (PS3.7 E.1, 9.3.2.3).
        if command_field & RESPONSE:
            wanted: tuple[int, ...] = (MESSAGE_ID_BEING_RESPONDED_TO, STATUS)
        else:
            wanted = (MESSAGE_ID_BEING_RESPONDED_TO,) if command_field == C_CANCEL_RQ else (MESSAGE_ID,)
        missing = [tag for tag in wanted if tag not in elements]
        if missing:
            raise KeyError(missing[0])
        number = {tag: _us(elements[tag], tag) for tag in (MESSAGE_ID, MESSAGE_ID_BEING_RESPONDED_TO, STATUS, ACTION_TYPE_ID) if tag in elements}
        return Command(
            command_field=command_field,
            message_id=number.get(MESSAGE_ID, 0),
            has_data_set=_us(elements[COMMAND_DATA_SET_TYPE], COMMAND_DATA_SET_TYPE) != NO_DATA_SET,
            affected_sop_class_uid=_text(elements.get(AFFECTED_SOP_CLASS_UID, b"")),
            affected_sop_instance_uid=_text(elements.get(AFFECTED_SOP_INSTANCE_UID, b"")),
            move_originator_ae_title=_text(elements.get(MOVE_ORIGINATOR_AE_TITLE, b"")),
            requested_sop_class_uid=_text(elements.get(REQUESTED_SOP_CLASS_UID, b"")),
            requested_sop_instance_uid=_text(elements.get(REQUESTED_SOP_INSTANCE_UID, b"")),
            move_destination=_text(elements.get(MOVE_DESTINATION, b"")),
            action_type_id=number.get(ACTION_TYPE_ID, 0),
            message_id_being_responded_to=number.get(MESSAGE_ID_BEING_RESPONDED_TO, 0),
            status=number.get(STATUS, 0),
        )
    except KeyError as exc:
        raise ProtocolError(f"command set without (0000,{exc.args[0]:04X})", reason=REASON_INVALID_PARAMETER) from None


def _element(tag: int, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad  # every value has an even length (PS3.5 7.1.1): UI pads with NUL, text with space
    return _ELEMENT.pack(0, tag, len(value)) + value


@dataclass(frozen=True)
class SubOperations:
    """A C-MOVE's or C-GET's sub-operation counts (PS3.7 9.1.3.1.7-10); `remaining` None leaves it out."""

    remaining: int | None
    completed: int
    failed: int
    warning: int


def _command(fields: list[tuple[int, bytes, bytes]]) -> bytes:
    body = b"".join(_element(tag, value, pad) for tag, value, pad in fields)
    return _element(0x0000, struct.pack("<L", len(body)), b"") + body


def _uid(tag: int, value: str) -> tuple[int, bytes, bytes]:
    return tag, value.encode(), b"\x00"  # UI pads with NUL


def _number(tag: int, value: int) -> tuple[int, bytes, bytes]:
    return tag, _US.pack(value), b""


def response(
    request: Command,
    status: int,
    error_comment: str = "",
    *,
    instance_uid: str = "",
    data_set: bool = False,
    counts: SubOperations | None = None,
) -> bytes:
    """The response command set to `request` with the given status (PS3.7 9.3, 10.3, C.4).

    Responses name the instance as "affected", whatever the request called it; `instance_uid` is
    one we assigned (an N-CREATE without an Affected SOP Instance UID, PS3.7 10.1.5.1.3).
    `data_set`: an identifier follows (a pending C-FIND, a C-MOVE's failed instances).
    """
    fields = []
    if request.sop_class_uid:
        fields.append(_uid(AFFECTED_SOP_CLASS_UID, request.sop_class_uid))
    fields.append(_number(COMMAND_FIELD, request.command_field | RESPONSE))
    fields.append(_number(MESSAGE_ID_BEING_RESPONDED_TO, request.message_id))
    fields.append(_number(COMMAND_DATA_SET_TYPE, DATA_SET if data_set else NO_DATA_SET))
    fields.append(_number(STATUS, status))
    if error_comment:
        # Error Comment is LO: 64 characters at most (PS3.7 C.4.2.1.3).
        fields.append((ERROR_COMMENT, error_comment[:64].encode("ascii", errors="replace"), b" "))
    if instance_uid or request.sop_instance_uid:
        fields.append(_uid(AFFECTED_SOP_INSTANCE_UID, instance_uid or request.sop_instance_uid))
    if request.command_field == N_ACTION_RQ:
        fields.append(_number(ACTION_TYPE_ID, request.action_type_id))  # PS3.7 10.1.4.1.3
    if counts is not None:
        if counts.remaining is not None:
            fields.append(_number(REMAINING, counts.remaining))
        fields += [_number(COMPLETED, counts.completed), _number(FAILED, counts.failed), _number(WARNING, counts.warning)]
    return _command(sorted(fields))


def c_store_request(message_id: int, sop_class_uid: str, sop_instance_uid: str) -> bytes:
    """A C-STORE-RQ command set with a data set to follow (PS3.7 9.3.1.1): a C-GET's sub-operation."""
    return _command(
        [
            _uid(AFFECTED_SOP_CLASS_UID, sop_class_uid),
            _number(COMMAND_FIELD, C_STORE_RQ),
            _number(MESSAGE_ID, message_id),
            _number(PRIORITY, MEDIUM),
            _number(COMMAND_DATA_SET_TYPE, DATA_SET),
            _uid(AFFECTED_SOP_INSTANCE_UID, sop_instance_uid),
        ]
    )


def n_event_report_request(message_id: int, sop_class_uid: str, sop_instance_uid: str, event_type_id: int) -> bytes:
    """An N-EVENT-REPORT-RQ command set with its event information to follow (PS3.7 10.3.1.1)."""
    return _command(
        [
            _uid(AFFECTED_SOP_CLASS_UID, sop_class_uid),
            _number(COMMAND_FIELD, N_EVENT_REPORT_RQ),
            _number(MESSAGE_ID, message_id),
            _number(COMMAND_DATA_SET_TYPE, DATA_SET),
            _uid(AFFECTED_SOP_INSTANCE_UID, sop_instance_uid),
            _number(EVENT_TYPE_ID, event_type_id),
        ]
    )
