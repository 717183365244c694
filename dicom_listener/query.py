"""Query/Retrieve C-FIND SCP (PS3.4 C.4.1) for the Patient Root and Study Root information models.

The identifier is read into a storage.dicom_query.Query (the matching, shared with QIDO-RS, is
there); the search and its audit record run in one transaction (integration.dicom_queries); then
one Pending response per match, each checking first whether the peer cancelled (C.4.1.3.1),
and a final Success. Keys we do not support are left out of the responses and make them
"Pending: warning" (FF01H, C.4.1.1.4); every response names us as the Retrieve AE Title
(C.4.1.1.3.2). Text is returned in the request's character set when it holds every value,
else in UTF-8 (ISO_IR 192), which C.4.1.1.3.2 allows.
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from pydicom.charset import python_encoding
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from dicom_listener import dimse, exchange, negotiation
from dicom_listener.association import Association
from audit.records import DICOM_QUERIED
from dicom_listener.ingest import Receiver, audit_refusal
from integration.errors import CannotUnderstand
from integration.instances.spool import Spool
from integration import dimse_status
from integration.dicom_queries import identifier, search
from storage.dicom_query import LEVELS, UNIQUE, Level, Query, QueryError, Value, supported
from storage.errors import StorageUnavailable

log = logging.getLogger(__name__)

# Attributes of an identifier that are not keys (PS3.4 C.4.1.1.3.1).
_NOT_KEYS = frozenset({"SpecificCharacterSet", "QueryRetrieveLevel", "TimezoneOffsetFromUTC"})
# Return keys we always answer: where the instances are retrieved from, and how soon (C.4.1.1.3.2).
_LOCATION = frozenset({"RetrieveAETitle", "InstanceAvailability"})


@dataclass(frozen=True)
class Request:
    """A C-FIND identifier read: the query, the keys not supported, and the request's character set."""

    query: Query
    unsupported: tuple[str, ...]
    charset: tuple[str, ...]


def text_of(value: object) -> str:
    """An element's value as a key's text: multiple values joined by backslashes, names as decoded."""
    if value is None:
        return ""
    if isinstance(value, MultiValue | list):
        return "\\".join(text_of(v) for v in value)
    return str(value).strip()


def level_of(identifier: Dataset, root: Level) -> Level:
    """The identifier's Query/Retrieve Level, one the information model has (PS3.4 C.6.1, C.6.2); QueryError otherwise."""
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    top = LEVELS.index(root)
    if level not in LEVELS[top:]:
        raise QueryError(f"Query/Retrieve Level {level!r} is not one of the {root} root model")
    return level


def read_request(identifier: Dataset, root: Level) -> Request:
    """The query an identifier asks for at its level (PS3.4 C.4.1.1.3.1); QueryError for a level the model has not."""
    level = level_of(identifier, root)
    keys: dict[str, str] = {}
    unsupported = []
    for element in identifier:
        keyword = element.keyword
        if keyword in _NOT_KEYS or keyword in _LOCATION:
            continue
        if element.VR == "SQ" or not supported(keyword, level):
            unsupported.append(keyword or f"({element.tag.group:04X},{element.tag.element:04X})")
            continue
        keys[keyword] = text_of(element.value)
    # Every Unique Key above the level is returned (the Hierarchical Search Method, C.4.1.3.1.1).
    above = [UNIQUE[lv] for lv in LEVELS[LEVELS.index(root) : LEVELS.index(level)]]
    returns = list(dict.fromkeys([*above, *keys]))
    charset = identifier.get("SpecificCharacterSet") or []
    charset = [charset] if isinstance(charset, str) else list(charset)
    return Request(Query(level, keys, returns), tuple(unsupported), tuple(str(c) for c in charset))


def _encodable(text: str, charset: tuple[str, ...]) -> bool:
    # A single-byte or UTF-8 character set without code extensions; ISO 2022 sets are not reused.
    if len(charset) != 1 or charset[0].startswith("ISO 2022"):
        return False
    codec = python_encoding.get(charset[0])
    if codec is None:
        return False
    try:
        text.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def response_identifier(request: Request, values: Mapping[str, Value], *, ae_title: str, requested: set[str]) -> Dataset:
    """One match's response identifier (PS3.4 C.4.1.1.3.2)."""
    ds = Dataset()
    texts = [text_of(v) for v in values.values() if isinstance(v, str | list)]
    if any(not t.isascii() for t in texts):
        charset = request.charset if all(_encodable(t, request.charset) for t in texts) else ("ISO_IR 192",)
        ds.SpecificCharacterSet = list(charset) if len(charset) > 1 else charset[0]
    ds.QueryRetrieveLevel = request.query.level
    ds.RetrieveAETitle = ae_title
    if "InstanceAvailability" in requested:
        ds.InstanceAvailability = "ONLINE"  # every instance is in object storage, retrievable at once
    ds.update(identifier(values))
    return ds


def find(receiver: Receiver, assoc: Association, request: dimse.Command, context_id: int, spool: Spool) -> None:
    """Answer a C-FIND: pending responses, one per match, then the final status."""
    assert assoc.policy is not None
    root: Level = negotiation.FIND[assoc.contexts[context_id].abstract_syntax]  # type: ignore[assignment]
    if not assoc.policy.may_find:
        audit_refusal(receiver, assoc, DICOM_QUERIED, via="C-FIND", reason="the calling AE may not query")
        exchange.respond(assoc, context_id, request, dimse_status.QUERY_NOT_AUTHORIZED, "the calling AE may not query")
        return
    try:
        identifier = exchange.data_set(spool, assoc.contexts[context_id].transfer_syntax, max_bytes=receiver.settings.dicom_max_request_bytes)
    except (InvalidDicomError, CannotUnderstand, ValueError, EOFError, KeyError, TypeError, OSError) as exc:
        exchange.respond(assoc, context_id, request, dimse_status.CANNOT_UNDERSTAND, f"identifier unreadable: {type(exc).__name__}")
        return
    try:
        asked = read_request(identifier, root)
        matches, _ = search(receiver.engine, asked.query, who=f"ae:{assoc.calling_ae}", address=assoc.address, via="C-FIND")
    except QueryError as exc:
        exchange.respond(assoc, context_id, request, dimse_status.DATA_SET_DOES_NOT_MATCH, str(exc))
        return
    except StorageUnavailable as exc:
        log.warning("C-FIND refused, database unavailable: %s", exc)
        exchange.respond(assoc, context_id, request, dimse_status.OUT_OF_RESOURCES, "index unavailable, retry later")
        return
    pending = dimse_status.PENDING_KEYS_NOT_SUPPORTED if asked.unsupported else dimse_status.PENDING
    requested = {e.keyword for e in identifier}
    for match in matches:
        if exchange.cancelled(assoc, request.message_id):
            exchange.respond(assoc, context_id, request, dimse_status.CANCEL)
            return
        ds = response_identifier(asked, match.values, ae_title=receiver.settings.dicom_ae_title, requested=requested)
        exchange.respond(assoc, context_id, request, pending, identifier=ds)
    exchange.respond(assoc, context_id, request, dimse_status.SUCCESS)
