"""DIMSE command sets: decoding the requests we serve, encoding our responses (PS3.7 6.3, 9.3, Annex E).

A command set is group 0000 only, always Implicit VR Little Endian (PS3.7 6.3.1), so a few
struct calls read and write it; the data set that may follow is never decoded here.
"""

import struct
from dataclasses import dataclass

from dicom_listener.errors import ProtocolError
from dicom_listener.pdus import REASON_INVALID_PARAMETER

C_STORE_RQ = 0x0001
C_ECHO_RQ = 0x0030
N_SET_RQ = 0x0120
N_CREATE_RQ = 0x0140
C_CANCEL_RQ = 0x0FFF
RESPONSE = 0x8000  # a response's Command Field is its request's with bit 15 set (PS3.7 E.1)
# (0000,0800) Command Data Set Type: 0101H means no data set follows (PS3.7 E.1).
NO_DATA_SET = 0x0101

_ELEMENT = struct.Struct("<HHL")
_US = struct.Struct("<H")

AFFECTED_SOP_CLASS_UID = 0x0002
REQUESTED_SOP_CLASS_UID = 0x0003
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
MESSAGE_ID_BEING_RESPONDED_TO = 0x0120
PRIORITY = 0x0700
COMMAND_DATA_SET_TYPE = 0x0800
STATUS = 0x0900
ERROR_COMMENT = 0x0902
AFFECTED_SOP_INSTANCE_UID = 0x1000
REQUESTED_SOP_INSTANCE_UID = 0x1001
MOVE_ORIGINATOR_AE_TITLE = 0x1030


@dataclass(frozen=True)
class Command:
    """The fields of a request's command set that we act on."""

    command_field: int
    message_id: int
    has_data_set: bool
    affected_sop_class_uid: str = ""
    affected_sop_instance_uid: str = ""
    move_originator_ae_title: str = ""
    # N-SET names the instance it changes as "requested" (PS3.7 10.1.1.1).
    requested_sop_class_uid: str = ""
    requested_sop_instance_uid: str = ""

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
        return Command(
            command_field=_us(elements[COMMAND_FIELD], COMMAND_FIELD),
            message_id=_us(elements[MESSAGE_ID], MESSAGE_ID),
            has_data_set=_us(elements[COMMAND_DATA_SET_TYPE], COMMAND_DATA_SET_TYPE) != NO_DATA_SET,
            affected_sop_class_uid=_text(elements.get(AFFECTED_SOP_CLASS_UID, b"")),
            affected_sop_instance_uid=_text(elements.get(AFFECTED_SOP_INSTANCE_UID, b"")),
            move_originator_ae_title=_text(elements.get(MOVE_ORIGINATOR_AE_TITLE, b"")),
            requested_sop_class_uid=_text(elements.get(REQUESTED_SOP_CLASS_UID, b"")),
            requested_sop_instance_uid=_text(elements.get(REQUESTED_SOP_INSTANCE_UID, b"")),
        )
    except KeyError as exc:
        raise ProtocolError(f"command set without (0000,{exc.args[0]:04X})", reason=REASON_INVALID_PARAMETER) from None


def _element(tag: int, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad  # every value has an even length (PS3.5 7.1.1): UI pads with NUL, text with space
    return _ELEMENT.pack(0, tag, len(value)) + value


def response(request: Command, status: int, error_comment: str = "", *, instance_uid: str = "") -> bytes:
    """The response command set to `request`: no data set, the given status (PS3.7 9.3, 10.3, C.4).

    Responses name the instance as "affected", whatever the request called it; `instance_uid` is
    one we assigned (an N-CREATE without an Affected SOP Instance UID, PS3.7 10.1.5.1.3).
    """
    elements = []
    if request.sop_class_uid:
        elements.append(_element(AFFECTED_SOP_CLASS_UID, request.sop_class_uid.encode(), b"\x00"))
    elements.append(_element(COMMAND_FIELD, _US.pack(request.command_field | RESPONSE), b""))
    elements.append(_element(MESSAGE_ID_BEING_RESPONDED_TO, _US.pack(request.message_id), b""))
    elements.append(_element(COMMAND_DATA_SET_TYPE, _US.pack(NO_DATA_SET), b""))
    elements.append(_element(STATUS, _US.pack(status), b""))
    if error_comment:
        # Error Comment is LO: 64 characters at most (PS3.7 C.4.2.1.3).
        elements.append(_element(ERROR_COMMENT, error_comment[:64].encode("ascii", errors="replace"), b" "))
    if instance_uid or request.sop_instance_uid:
        elements.append(_element(AFFECTED_SOP_INSTANCE_UID, (instance_uid or request.sop_instance_uid).encode(), b"\x00"))
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<L", len(body)), b"") + body
