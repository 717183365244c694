"""Search criteria: parsed from query parameters, turned into SQL over the search index.

http://hl7.org/fhir/R4/search.html: parameters AND, comma-separated values OR. Supported:
token (`system|code`, `|code`, `system|`, `:not`), reference (`Type/id`, bare id, `:Type`,
absolute URL, chains one level deep such as `subject:Patient.identifier`), string (default
starts-with, `:exact`, `:contains`), date with the prefixes eq ne gt lt ge le sa eb ap, uri,
and `:missing` on every type.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import ColumnElement, Select, and_, false, func, literal, not_, or_, select, true

from storage.errors import InvalidSearch
from storage.fhir.index import date_range, normalise
from storage.fhir.references import relative_reference
from storage.fhir.definitions import SEARCH_PARAMS, SearchParam
from storage.tables.fhir import FhirResource, FhirSearchIndex

DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MODIFIERS = {
    "token": ("not", "missing"),
    "reference": ("missing",),
    "string": ("exact", "contains", "missing"),
    "date": ("missing",),
    "uri": ("missing",),
}


@dataclass(frozen=True)
class TokenValue:
    """`code`, `system|code`, `|code` (no system) or `system|` (any code): None means "any"."""

    system: str | None
    code: str | None


@dataclass(frozen=True)
class DateValue:
    """A prefixed date: the closed UTC range the written value stands for."""

    prefix: str
    low: datetime
    high: datetime


@dataclass(frozen=True)
class Criterion:
    """One parameter of a search, with its modifier and the values any of which may match."""

    param: str
    type: str
    values: tuple[Any, ...]
    modifier: str = ""
    # A chained parameter: the referenced type and the criterion on it.
    target: str = ""
    chained: "Criterion | None" = None


class UnknownParameter(Exception):
    """A parameter or modifier we do not support: reported, or refused under strict handling."""


def split_values(text: str, separator: str = ",") -> list[str]:
    """Split on unescaped separators and undo the escapes (search.html#escaping)."""
    parts, current, escaped = [], "", False
    for char in text:
        if escaped:
            current += char if char in ",|$\\" else "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current + ("\\" if escaped else ""))
    return parts


def _token(raw: str) -> TokenValue:
    pieces = split_values(raw, "|") if "|" in raw else [raw]
    if len(pieces) == 1:
        return TokenValue(None, pieces[0])
    system, code = pieces[0], "|".join(pieces[1:])
    return TokenValue(system, code or None)


def date_value(raw: str) -> DateValue:
    """A prefixed FHIR date search value (search.html#prefix); InvalidSearch when malformed."""
    prefix = raw[:2] if raw[:2] in DATE_PREFIXES and raw[2:3].isdigit() else ""
    try:
        low, high = date_range(raw[len(prefix) :])
    except ValueError:
        raise InvalidSearch(f"not a FHIR date: {raw!r}") from None
    return DateValue(prefix or "eq", low, high)


def _reference(raw: str, spec: SearchParam, type_modifier: str) -> list[str]:
    if "/" in raw:
        return [relative_reference(raw)]
    # A bare id: of the type the modifier names, else of any target type (search.html#reference).
    return [f"{target}/{raw}" for target in ([type_modifier] if type_modifier else spec.targets)]


def _parse_values(spec: SearchParam, modifier: str, raw: str) -> tuple[Any, ...]:
    pieces = [p.strip() for p in split_values(raw)]
    pieces = [p for p in pieces if p]
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise InvalidSearch(f":missing takes true or false, not {raw!r}")
        return (raw == "true",)
    if spec.type == "token":
        return tuple(_token(p) for p in pieces)
    if spec.type == "date":
        return tuple(date_value(p) for p in pieces)
    if spec.type == "reference":
        type_modifier = modifier if modifier[:1].isupper() else ""
        return tuple(ref for p in pieces for ref in _reference(p, spec, type_modifier))
    if spec.type == "string" and modifier != "exact":
        return tuple(normalise(p) for p in pieces)
    return tuple(pieces)


def parse(resource_type: str, key: str, raw: str) -> Criterion | None:
    """The criterion of one query parameter; None for an empty value (ignored, search.html#errors)."""
    head, _, chain = key.partition(".")
    name, _, modifier = head.partition(":")
    spec = SEARCH_PARAMS.get(resource_type, {}).get(name)
    if spec is None:
        raise UnknownParameter(key)
    if chain:
        return _parse_chain(spec, modifier, chain, raw, key)
    type_modifier = spec.type == "reference" and modifier in spec.targets
    if modifier and not type_modifier and modifier not in MODIFIERS[spec.type]:
        raise UnknownParameter(key)
    values = _parse_values(spec, modifier, raw)
    if not values:
        return None
    return Criterion(param=name, type=spec.type, values=values, modifier=modifier if not type_modifier else "")


def _parse_chain(spec: SearchParam, modifier: str, chain: str, raw: str, key: str) -> Criterion | None:
    # Chaining (search.html#chaining): one level, through a reference with a known target type.
    if spec.type != "reference":
        raise UnknownParameter(key)
    if modifier:
        if modifier not in spec.targets:
            raise UnknownParameter(key)
        target = modifier
    elif len(spec.targets) == 1:
        target = spec.targets[0]
    else:
        raise InvalidSearch(f"{key}: name the target type, e.g. {spec.name}:{spec.targets[0]}.{chain}")
    if "." in chain or target not in SEARCH_PARAMS:
        raise UnknownParameter(key)
    inner = parse(target, chain, raw)
    if inner is None:
        return None
    if inner.modifier in ("missing", "not"):
        raise UnknownParameter(key)
    return Criterion(param=spec.name, type="reference", values=(), target=target, chained=inner)


# --- SQL ---------------------------------------------------------------------------------


def date_test(low: Any, high: Any, v: DateValue) -> Any:
    """SQL: the target's closed range [low, high] meets the prefixed date `v`."""
    # The target's range [low, high] against the parameter's range (search.html#prefix).
    if v.prefix == "eq":
        return and_(low >= v.low, high <= v.high)
    if v.prefix == "ne":
        return not_(and_(low >= v.low, high <= v.high))
    if v.prefix == "gt":
        return high > v.high
    if v.prefix == "lt":
        return low < v.low
    if v.prefix == "ge":
        return high >= v.low
    if v.prefix == "le":
        return low <= v.high
    if v.prefix == "sa":
        return low > v.high
    if v.prefix == "eb":
        return high < v.low
    # ap: within 10% of the distance between the value and now, as the spec suggests.
    slack = abs(datetime.now(UTC) - v.low) * 0.1
    return and_(low <= v.high + slack, high >= v.low - slack)


def _value_test(criterion: Criterion, value: Any, *, probe: bool = False) -> Any:
    idx = FhirSearchIndex
    if criterion.type == "date" and probe:
        # In a per-resource probe the owner's (type, id, parameter) entries are few: compare an
        # expression, so that SQLite, which has no statistics, does not range-scan the date index instead.
        return date_test(func.coalesce(idx.low, idx.low), func.coalesce(idx.high, idx.high), value)
    if criterion.type == "token":
        tests = []
        if value.code is not None:
            tests.append(idx.value == value.code)
        if value.system is not None:
            tests.append(idx.system == value.system)
        return and_(true(), *tests)
    if criterion.type == "date":
        return date_test(idx.low, idx.high, value)
    if criterion.type == "string":
        if criterion.modifier == "exact":
            return idx.exact == value
        if criterion.modifier == "contains":
            return idx.value.contains(value, autoescape=True)
        return idx.value.startswith(value, autoescape=True)
    return idx.value == value


def _resource_column_test(resource_type: str, criterion: Criterion) -> Select[Any] | None:
    # _id and _lastUpdated live on the resource row itself, not in the index.
    res = FhirResource
    base = select(res.resource_id).where(res.resource_type == resource_type)
    if criterion.param == "_id":
        codes = [v.code for v in criterion.values if v.code is not None]
        return base.where(res.resource_id.in_(codes))
    if criterion.param == "_lastUpdated":
        return base.where(or_(*(date_test(res.last_updated, res.last_updated, v) for v in criterion.values)))
    return None


def _index_test(resource_type: str, criterion: Criterion, *, probe: bool = False) -> list[ColumnElement[bool]]:
    # The conditions an index row of `resource_type` meets when it matches the criterion.
    idx = FhirSearchIndex
    tests: list[ColumnElement[bool]] = [idx.resource_type == resource_type, idx.param == criterion.param]
    if criterion.chained is not None:
        target_ids = positive_ids(criterion.target, criterion.chained)
        refs = select(literal(criterion.target + "/") + target_ids.subquery().c.resource_id)
        return [*tests, idx.value.in_(refs)]
    if criterion.modifier != "missing":
        tests.append(or_(false(), *(_value_test(criterion, v, probe=probe) for v in criterion.values)))
    return tests


def positive_ids(resource_type: str, criterion: Criterion) -> Select[Any]:
    """The ids of resources that have a matching value (ignoring `:not`; any value for `:missing`)."""
    direct = _resource_column_test(resource_type, criterion)
    if direct is not None:
        return direct
    return select(FhirSearchIndex.resource_id).where(*_index_test(resource_type, criterion))


def _has(resource_type: str, criterion: Criterion) -> ColumnElement[bool]:
    # A correlated EXISTS probe per resource row: with the (type, resource_id, param) index the
    # database checks one resource in a few index steps, so walking resources in sort order
    # stops after a page of matches however many match in all (fhir_api/fhir/search.py).
    idx = FhirSearchIndex
    if criterion.param == "_id":
        return FhirResource.resource_id.in_([v.code for v in criterion.values if v.code is not None])
    if criterion.param == "_lastUpdated":
        res = FhirResource
        return or_(false(), *(date_test(res.last_updated, res.last_updated, v) for v in criterion.values))
    return (
        select(idx.id)
        .where(idx.resource_id == FhirResource.resource_id, *_index_test(resource_type, criterion, probe=True))
        .exists()
    )


def condition(resource_type: str, criterion: Criterion, *, drive: bool = False) -> ColumnElement[bool]:
    """A WHERE clause on FhirResource rows of `resource_type` that match the criterion.

    By default a per-row probe (EXISTS); with `drive`, an IN over the matching ids, which lets
    the database start from the index when the criterion matches few resources.
    """
    column = FhirResource.resource_id
    if criterion.modifier == "missing":
        # :missing=true: no value at all; :missing=false: some value (search.html#modifiers).
        return ~_has(resource_type, criterion) if criterion.values[0] else _has(resource_type, criterion)
    if criterion.modifier == "not":
        # :not matches resources that have no matching value, including ones with no value (search.html#token).
        return ~_has(resource_type, criterion)
    if drive:
        return column.in_(positive_ids(resource_type, criterion))
    return _has(resource_type, criterion)


def parse_all(resource_type: str, query: str) -> list[Criterion]:
    """Every criterion of a query string such as "status=final&patient=123", strictly.

    For Subscription.criteria, If-None-Exist and conditional update/delete, where an ignored
    parameter would widen what matches: unknown ones are an InvalidSearch.
    """
    found = []
    for key, raw in parse_qsl(query, keep_blank_values=True):
        if key in ("_format", "_pretty"):
            continue
        try:
            criterion = parse(resource_type, key, raw)
        except UnknownParameter:
            raise InvalidSearch(f"unsupported search parameter {key!r} for {resource_type}") from None
        if criterion is not None:
            found.append(criterion)
    return found
