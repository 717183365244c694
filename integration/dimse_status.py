"""DIMSE status codes and their categories: one table for the SCP (dicom_listener) and the SCU (outbound C-STORE).

A response's Status (0000,0900) is one of the general statuses of PS3.7 Annex C or a service
class's own: Storage (PS3.4 B.2.3), Query/Retrieve (PS3.4 C.4), Storage Commitment (PS3.4 J.3),
Modality Performed Procedure Step (PS3.4 F.7.2.2). Some are given as ranges (A7xx "Refused: Out
of Resources", Cxxx "Error: Cannot understand"), and every code outside the named ones falls in
its class's range: A000-AFFF and C000-CFFF failures, B000-BFFF warnings (PS3.7 Annex C). A code
can mean different things to different services (B000 is a coerced C-STORE but a C-MOVE with
failed sub-operations), so each row names its service; the table is searched in order, so a
specific code is listed before the range it falls in. docs/dicom-conformance.md lists the
statuses we answer with from this table (tests/test_conformance.py keeps the two in step).
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
    """One status code, or a range of codes with one meaning to one service, and its category."""

    first: int
    last: int
    category: Category
    service: str  # any, storage, mpps, query-retrieve, commitment
    meaning: str


# The codes this engine answers with (each is a row of the table below).
SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_KEYS_NOT_SUPPORTED = 0xFF01
CANCEL = 0xFE00
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
MISSING_ATTRIBUTE = 0x0120
NO_SUCH_ACTION = 0x0123
NOT_AUTHORIZED = 0x0124
UNRECOGNIZED_OPERATION = 0x0211
RESOURCE_LIMITATION = 0x0213
OUT_OF_RESOURCES = 0xA700
UNABLE_TO_CALCULATE_MATCHES = 0xA701
UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702
NO_LONGER_UPDATABLE = 0xA710
MOVE_DESTINATION_UNKNOWN = 0xA801
DATA_SET_DOES_NOT_MATCH = 0xA900
SUB_OPERATIONS_WITH_FAILURES = 0xB000
CANNOT_UNDERSTAND = 0xC000
# C-FIND has no "not authorized" of its own (PS3.4 C.4.1.1.4, PS3.7 9.1.2.1.6): a "Failed: Unable
# to process" code, which the SCP assigns per cause; C124 echoes the general 0124H.
QUERY_NOT_AUTHORIZED = 0xC124


# Searched in order: a code before the range it falls in. Code, or first-last, in hex; category; service; meaning.
_TABLE = """
# PS3.7 Annex C: general statuses, any service.
0000       Success  any             Success
FF00       Pending  any             Pending
FF01       Pending  any             Pending: warning
FE00       Cancel   any             Cancel
0001       Warning  any             Requested optional Attributes are not supported
0107       Warning  any             Attribute list error
0116       Warning  any             Attribute Value Out of Range
0105       Failure  any             No such attribute
0106       Failure  any             Invalid attribute value
0110       Failure  any             Processing failure
0111       Failure  any             Duplicate SOP Instance
0112       Failure  any             No such object instance
0113       Failure  any             No such event type
0114       Failure  any             No such argument
0115       Failure  any             Invalid argument value
0117       Failure  any             Invalid object instance
0118       Failure  any             No such SOP Class
0119       Failure  any             Class-instance conflict
0120       Failure  any             Missing attribute
0121       Failure  any             Missing attribute value
0122       Failure  any             Refused: SOP Class not supported
0123       Failure  any             No such action
0124       Failure  any             Refused: not authorized
0210       Failure  any             Duplicate invocation
0211       Failure  any             Unrecognized operation
0212       Failure  any             Mistyped argument
0213       Failure  any             Resource limitation
# PS3.4 F.7.2.2: MPPS N-SET of a step that has ended.
A710       Failure  mpps            Performed Procedure Step Object may no longer be updated
# PS3.4 B.2.3: Storage.
A700-A7FF  Failure  storage         Refused: Out of Resources
A900-A9FF  Failure  storage         Error: Data Set does not match SOP Class
C000-CFFF  Failure  storage         Error: Cannot understand
B000       Warning  storage         Coercion of Data Elements
B006       Warning  storage         Elements Discarded
B007       Warning  storage         Data Set does not match SOP Class
# PS3.4 C.4: Query/Retrieve (C-FIND, C-MOVE, C-GET).
FF00       Pending  query-retrieve  Matches or sub-operations are continuing
FF01       Pending  query-retrieve  Matches are continuing: one or more Optional Keys were not supported
FE00       Cancel   query-retrieve  Matching or sub-operations terminated due to a Cancel request
A700       Failure  query-retrieve  Refused: Out of resources
A701       Failure  query-retrieve  Refused: Out of resources - Unable to calculate number of matches
A702       Failure  query-retrieve  Refused: Out of resources - Unable to perform sub-operations
A801       Failure  query-retrieve  Refused: Move Destination unknown
A900       Failure  query-retrieve  Error: Identifier does not match SOP Class
C124       Failure  query-retrieve  Failed: Unable to process - the calling AE may not query
C000-CFFF  Failure  query-retrieve  Failed: Unable to process
B000       Warning  query-retrieve  Sub-operations complete - one or more failures or warnings
# PS3.7 Annex C: the rest of each service-specific range.
A000-AFFF  Failure  any             Failure
B000-BFFF  Warning  any             Warning
"""


def _rows(text: str) -> tuple[Status, ...]:
    rows = []
    for line in text.strip().splitlines():
        if line.startswith("#"):
            continue
        codes, kind, service, meaning = line.split(maxsplit=3)
        first, _, last = codes.partition("-")
        rows.append(Status(int(first, 16), int(last or first, 16), Category(kind), service, meaning))
    return tuple(rows)


TABLE = _rows(_TABLE)


def status_of(code: int, service: str = "") -> Status | None:
    """The table's row for `code`: the code itself, else the range it falls in; None when none covers it.

    With a `service`, that service's own rows come first (B000 means one thing to a C-STORE,
    another to a C-MOVE).
    """
    rows = [r for r in TABLE if r.service == service] + list(TABLE) if service else TABLE
    return next((row for row in rows if row.first <= code <= row.last), None)


def category(code: int) -> Category:
    """Success, pending, cancel, warning or failure; unknown for a code no row covers."""
    row = status_of(code)
    return Category.UNKNOWN if row is None else row.category
