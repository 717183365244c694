"""DIMSE status codes and their categories: one table for the SCP (dicom_listener) and the SCU (outbound C-STORE).

A response's Status (0000,0900) is one of the general statuses of PS3.7 Annex C or a service
class's own: Storage (PS3.4 B.2.3), Modality Performed Procedure Step (PS3.4 F.7.2.2). Some are
given as ranges (A7xx "Refused: Out of Resources", Cxxx "Error: Cannot understand"), and every
code outside the named ones falls in its class's range: A000-AFFF and C000-CFFF failures,
B000-BFFF warnings (PS3.7 Annex C). The table is searched in order, so a specific code is listed
before the range it falls in. New services add their rows here (Query/Retrieve: PS3.4 C.4).
"""

from dataclasses import dataclass
from enum import StrEnum


class Category(StrEnum):
    """The class of a status (PS3.7 Annex C), spelled as pynetdicom spells it."""

    SUCCESS = "Success"
    PENDING = "Pending"
    CANCEL = "Cancel"
    WARNING = "Warning"
    FAILURE = "Failure"
    UNKNOWN = "Unknown"  # a code no row covers


@dataclass(frozen=True)
class Status:
    """One status code, or a range of codes with one meaning, and its category."""

    first: int
    last: int
    category: Category
    meaning: str


# The codes this engine answers with (each is a row of the table below).
SUCCESS = 0x0000
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_OBJECT_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
UNRECOGNIZED_OPERATION = 0x0211
OUT_OF_RESOURCES = 0xA700
NO_LONGER_UPDATABLE = 0xA710
DATA_SET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000


# Searched in order: a code before the range it falls in. Code, or first-last, in hex; category; meaning.
_TABLE = """
# PS3.7 Annex C: general statuses, any service.
0000       Success  Success
FF00       Pending  Pending
FF01       Pending  Pending: warning
FE00       Cancel   Cancel
0001       Warning  Requested optional Attributes are not supported
0107       Warning  Attribute list error
0116       Warning  Attribute Value Out of Range
0105       Failure  No such attribute
0106       Failure  Invalid attribute value
0110       Failure  Processing failure
0111       Failure  Duplicate SOP Instance
0112       Failure  No such object instance
0113       Failure  No such event type
0114       Failure  No such argument
0115       Failure  Invalid argument value
0117       Failure  Invalid object instance
0118       Failure  No such SOP Class
0119       Failure  Class-instance conflict
0120       Failure  Missing attribute
0121       Failure  Missing attribute value
0122       Failure  Refused: SOP Class not supported
0123       Failure  No such action
0124       Failure  Refused: not authorized
0210       Failure  Duplicate invocation
0211       Failure  Unrecognized operation
0212       Failure  Mistyped argument
0213       Failure  Resource limitation
# PS3.4 F.7.2.2: MPPS N-SET of a step that has ended.
A710       Failure  Performed Procedure Step Object may no longer be updated
# PS3.4 B.2.3: Storage.
A700-A7FF  Failure  Refused: Out of Resources
A900-A9FF  Failure  Error: Data Set does not match SOP Class
C000-CFFF  Failure  Error: Cannot understand
B000       Warning  Coercion of Data Elements
B006       Warning  Elements Discarded
B007       Warning  Data Set does not match SOP Class
# PS3.7 Annex C: the rest of each service-specific range.
A000-AFFF  Failure  Failure
B000-BFFF  Warning  Warning
"""


def _rows(text: str) -> tuple[Status, ...]:
    rows = []
    for line in text.strip().splitlines():
        if line.startswith("#"):
            continue
        codes, kind, meaning = line.split(maxsplit=2)
        first, _, last = codes.partition("-")
        rows.append(Status(int(first, 16), int(last or first, 16), Category(kind), meaning))
    return tuple(rows)


TABLE = _rows(_TABLE)


def status_of(code: int) -> Status | None:
    """The table's row for `code`: the code itself, else the range it falls in; None when none covers it."""
    return next((row for row in TABLE if row.first <= code <= row.last), None)


def category(code: int) -> Category:
    """Success, pending, cancel, warning or failure; unknown for a code no row covers."""
    row = status_of(code)
    return Category.UNKNOWN if row is None else row.category
