"""Search-index values: what a resource holds for each search parameter, normalised for SQL.

http://hl7.org/fhir/R4/search.html. Tokens keep system and code apart; references are relative
"Type/id"; strings are stored normalised (case and accents removed, for the default
starts-with match) and as sent (for `:exact`); dates are closed ranges [low, high] of UTC
instants at microsecond precision, because a FHIR date is a range ("2013-05" is all of May).
"""

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from storage import fhir
from storage.fhir.references import relative_reference

# Index columns are at most 256 characters; a longer value could not be matched exactly anyway.
MAX_VALUE = 256
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
_TICK = timedelta(microseconds=1)
# FHIR dateTime (http://hl7.org/fhir/R4/datatypes.html#dateTime): YYYY, YYYY-MM, YYYY-MM-DD or a full time.
_PARTIAL = re.compile(r"(?P<y>\d{4})(-(?P<m>\d{2})(-(?P<d>\d{2}))?)?")


@dataclass(frozen=True)
class IndexValue:
    """One row of the search index, before it gets its owner's type and id."""

    param: str
    value: str = ""
    system: str = ""
    exact: str = ""
    low: datetime | None = None
    high: datetime | None = None


def normalise(text: str) -> str:
    """Text as string search compares it: accents and case removed, spaces collapsed (search.html#string)."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.casefold().split())


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.month - 1 + months
    return moment.replace(year=moment.year + index // 12, month=index % 12 + 1)


def shifted(moment: datetime, delta: timedelta) -> datetime:
    """`moment + delta`, held within [EARLIEST, LATEST]: FHIR dates run from year 1 to 9999."""
    try:
        return min(max(moment + delta, EARLIEST), LATEST)
    except OverflowError:
        return LATEST if delta > timedelta(0) else EARLIEST


def _utc(moment: datetime) -> datetime:
    # 0001-01-01T00:00:00+14:00 is in year 0 in UTC, 9999-12-31T23:59:59-14:00 in year 10000:
    # both valid FHIR instants that Python cannot hold, so they are held at the ends of time.
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    offset = moment.utcoffset() or timedelta(0)
    return shifted(moment.replace(tzinfo=UTC), -offset)


def instant(text: str) -> datetime:
    """An ISO 8601 instant with its zone, in UTC; ValueError when malformed, naive or outside years 1 to 9999."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text[:40]!r} has no time zone")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text[:40]!r} is outside the years 1 to 9999 in UTC") from None


def date_range(value: str | date | datetime) -> tuple[datetime, datetime]:
    """The closed UTC range a FHIR date, dateTime or instant stands for; ValueError when malformed.

    A value without a zone is taken as UTC (the server's zone, search.html#date).
    """
    if isinstance(value, datetime):
        moment = _utc(value)
        # Precision is the second unless fractions were given (datatypes.html#dateTime).
        return (moment, shifted(moment, timedelta(seconds=1) - _TICK)) if moment.microsecond == 0 else (moment, moment)
    if isinstance(value, date):
        start = datetime(value.year, value.month, value.day, tzinfo=UTC)
        return start, shifted(start, timedelta(days=1) - _TICK)
    match = _PARTIAL.fullmatch(value)
    if match is None:
        return date_range(datetime.fromisoformat(value.replace("Z", "+00:00")))
    year, month, day = int(match["y"]), int(match["m"] or 1), int(match["d"] or 1)
    start = datetime(year, month, day, tzinfo=UTC)
    if match["d"]:
        return start, shifted(start, timedelta(days=1) - _TICK)
    if match["m"]:
        return start, (_add_months(start, 1) - _TICK) if (year, month) < (9999, 12) else LATEST
    return start, (start.replace(year=year + 1) - _TICK) if year < 9999 else LATEST


def walk(node: Any, path: tuple[str, ...]) -> Iterator[Any]:
    """The values at a dotted element path below `node`, flattening lists on the way."""
    if node is None:
        return
    if isinstance(node, list):
        for item in node:
            yield from walk(item, path)
        return
    if not path:
        yield node
        return
    yield from walk(getattr(node, path[0], None), path[1:])


def _token(param: str, item: Any) -> list[IndexValue]:
    if isinstance(item, fhir.CodeableConcept):
        return [v for c in item.coding or [] for v in _token(param, c)]
    if isinstance(item, fhir.Coding):
        return [IndexValue(param, item.code, item.system or "")] if item.code else []
    if isinstance(item, fhir.Identifier):
        return [IndexValue(param, item.value, item.system or "")] if item.value else []
    if isinstance(item, bool):
        return [IndexValue(param, "true" if item else "false")]
    if isinstance(item, str) and item:
        return [IndexValue(param, item)]
    return []


def _reference(param: str, item: Any) -> list[IndexValue]:
    if isinstance(item, fhir.Reference) and item.reference and not item.reference.startswith("#"):
        return [IndexValue(param, relative_reference(item.reference))]
    return []


def _strings(item: Any) -> list[str]:
    if isinstance(item, fhir.HumanName):
        parts: list[str | None] = [*(item.given or []), *(item.prefix or []), *(item.suffix or []), item.family, item.text]
        return [p for p in parts if p]
    if isinstance(item, str):
        return [item]
    return []


def _string(param: str, item: Any) -> list[IndexValue]:
    return [IndexValue(param, normalise(s), exact=s) for s in _strings(item) if s]


def _date(param: str, item: Any) -> list[IndexValue]:
    if isinstance(item, str | date | datetime) and item:
        low, high = date_range(item)
        return [IndexValue(param, low=low, high=high)]
    start, end = getattr(item, "start", None), getattr(item, "end", None)
    if start is None and end is None:
        return []
    # An open Period end means "ongoing" (datatypes.html#Period).
    low = date_range(start)[0] if start is not None else EARLIEST
    high = date_range(end)[1] if end is not None else LATEST
    return [IndexValue(param, low=low, high=high)]


_CONVERTERS = {"token": _token, "reference": _reference, "string": _string, "date": _date, "uri": _token}


def values(param: str, kind: str, found: Iterable[Any]) -> list[IndexValue]:
    """The index values of the elements `found` for a parameter of FHIR search type `kind`."""
    converter = _CONVERTERS[kind]
    rows = [v for item in found for v in converter(param, item)]
    return [r for r in rows if len(r.value) <= MAX_VALUE and len(r.system) <= MAX_VALUE and len(r.exact) <= MAX_VALUE]
