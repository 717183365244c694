"""FHIR search on the store: parse the query, run it, answer with a searchset Bundle.

http://hl7.org/fhir/R4/search.html. Parameters AND, comma-separated values OR. Unknown
parameters are ignored and reported in an OperationOutcome entry, unless the client sent
`Prefer: handling=strict`, which turns them into a 400.
"""

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from fhir_api import fhir, store
from fhir_api.errors import InvalidSearch
from fhir_api.mapping import operation_outcome, relative_reference


@dataclass(frozen=True)
class ParamSpec:
    """A search parameter we support: its FHIR type and its definition's canonical URL."""

    type: str  # "token" or "reference"
    definition: str
    documentation: str
    # For a reference given as a bare id, the resource type it is assumed to point at.
    default_target: str = ""


@dataclass(frozen=True)
class IncludeSpec:
    """An _include value we support: the index parameter it follows."""

    param: str
    target: str


_SP = "http://hl7.org/fhir/SearchParameter/"

SEARCH_PARAMS: dict[str, dict[str, ParamSpec]] = {
    "DiagnosticReport": {
        "_id": ParamSpec("token", _SP + "Resource-id", "Logical id of the report (the inference job id)"),
        "patient": ParamSpec(
            "reference", _SP + "clinical-patient", "The subject of the report if a patient", "Patient"
        ),
        "subject": ParamSpec("reference", _SP + "DiagnosticReport-subject", "The subject of the report", "Patient"),
        "status": ParamSpec("token", _SP + "DiagnosticReport-status", "The status of the report"),
    },
}

INCLUDES: dict[str, dict[str, IncludeSpec]] = {
    "DiagnosticReport": {
        "DiagnosticReport:result": IncludeSpec("result", "Observation"),
        "DiagnosticReport:imaging-study": IncludeSpec("imaging-study", "ImagingStudy"),
        "DiagnosticReport:subject": IncludeSpec("subject", "Patient"),
    },
}

# Result parameters we handle; `_offset` pages through a searchset (our next links use it).
_COUNT = "_count"
_OFFSET = "_offset"
_INCLUDE = "_include"
DEFAULT_COUNT = 20
MAX_COUNT = 100


@dataclass(frozen=True)
class SearchQuery:
    """A parsed search: what to match, which page, what to include, and what was ignored."""

    resource_type: str
    criteria: tuple[store.Criterion, ...]
    count: int
    offset: int
    includes: tuple[IncludeSpec, ...]
    accepted: tuple[tuple[str, str], ...]
    unknown: tuple[str, ...]


@dataclass(frozen=True)
class SearchResult:
    """One page of matches, the resources they include, and how many match in all."""

    total: int
    matches: list[fhir.Resource]
    included: list[fhir.Resource]


def _reference_value(value: str, target: str) -> str:
    # A bare id means the parameter's one (or assumed) target type (search.html#reference).
    if "/" in value:
        return relative_reference(value)
    return f"{target}/{value}" if target else value


def _token_value(value: str) -> str:
    # "|code" means a code without a system; this index holds bare codes for every token.
    return value[1:] if value.startswith("|") else value


def _non_negative_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidSearch(f"{name} must be a whole number, not {value!r}") from None
    if number < 0:
        raise InvalidSearch(f"{name} must not be negative")
    return number


def parse_query(resource_type: str, items: Sequence[tuple[str, str]], *, strict: bool) -> SearchQuery:
    """Parse query items (in order, repeats kept) into a search on `resource_type`."""
    specs = SEARCH_PARAMS.get(resource_type, {})
    include_specs = INCLUDES.get(resource_type, {})
    criteria: list[store.Criterion] = []
    includes: list[IncludeSpec] = []
    accepted: list[tuple[str, str]] = []
    unknown: list[str] = []
    count, offset = DEFAULT_COUNT, 0
    for key, raw in items:
        value = raw.strip()
        name, _, modifier = key.partition(":")
        if key == _COUNT:
            count = min(_non_negative_int(key, value), MAX_COUNT)
        elif key == _OFFSET:
            offset = _non_negative_int(key, value)
        elif key == _INCLUDE and value in include_specs:
            includes.append(include_specs[value])
        elif key == _INCLUDE and value.count(":") == 2 and value.rsplit(":", 1)[0] in include_specs:
            # "DiagnosticReport:subject:Patient": the target type must be the one we follow.
            include = include_specs[value.rsplit(":", 1)[0]]
            if value.rsplit(":", 1)[1] != include.target:
                unknown.append(f"{key}={value}")
                continue
            includes.append(include)
        elif name in specs and (not modifier or (specs[name].type == "reference" and modifier[:1].isupper())):
            spec = specs[name]
            if not value:
                continue  # an empty parameter value is ignored (search.html#errors)
            if spec.type == "reference":
                target = modifier or spec.default_target
                values = [_reference_value(v.strip(), target) for v in value.split(",") if v.strip()]
            else:
                values = [_token_value(v.strip()) for v in value.split(",") if v.strip()]
            criteria.append((name, tuple(values)))
        else:
            unknown.append(key if key != _INCLUDE else f"{key}={value}")
            continue
        accepted.append((key, raw))
    if unknown and strict:
        raise InvalidSearch(f"unsupported search parameters: {', '.join(unknown)}")
    return SearchQuery(
        resource_type=resource_type,
        criteria=tuple(criteria),
        count=count,
        offset=offset,
        includes=tuple(includes),
        accepted=tuple(accepted),
        unknown=tuple(unknown),
    )


def run(session: Session, query: SearchQuery, *, may_include: Callable[[str], bool]) -> SearchResult:
    """Run the search; `may_include(type)` says which included resource types the caller may see."""
    total = store.count(session, query.resource_type, query.criteria)
    matches = (
        store.search(session, query.resource_type, query.criteria, limit=query.count, offset=query.offset)
        if query.count
        else []
    )
    ids = [m.id for m in matches if m.id]
    refs: list[str] = []
    for spec in query.includes:
        if may_include(spec.target):
            refs.extend(
                r
                for r in store.references(session, query.resource_type, ids, spec.param)
                if r.startswith(spec.target + "/") and r not in refs
            )
    return SearchResult(total=total, matches=matches, included=store.read_references(session, refs))


def _page_url(base_url: str, query: SearchQuery, offset: int) -> str:
    items = [(k, v) for k, v in query.accepted if k not in (_COUNT, _OFFSET)]
    items += [(_COUNT, str(query.count)), (_OFFSET, str(offset))]
    return f"{base_url}/{query.resource_type}?{urlencode(items)}"


def searchset(result: SearchResult, query: SearchQuery, *, base_url: str) -> fhir.Bundle:
    """The searchset Bundle: total, self (and next) links, match and include entries, and an outcome."""

    def entry(resource: fhir.Resource, mode: str) -> fhir.BundleEntry:
        return fhir.BundleEntry(
            fullUrl=f"{base_url}/{resource.get_resource_type()}/{resource.id}",
            resource=resource,
            search=fhir.BundleEntrySearch(mode=mode),
        )

    entries = [entry(r, "match") for r in result.matches] + [entry(r, "include") for r in result.included]
    if query.unknown:
        outcome = operation_outcome(
            "warning", "not-supported", f"ignored unsupported search parameters: {', '.join(query.unknown)}"
        )
        entries.append(
            fhir.BundleEntry(
                fullUrl=f"urn:uuid:{uuid.uuid4()}", resource=outcome, search=fhir.BundleEntrySearch(mode="outcome")
            )
        )
    # The self link shows the search as executed, without the parameters we ignored.
    links = [fhir.BundleLink(relation="self", url=_page_url(base_url, query, query.offset))]
    if query.count and query.offset + query.count < result.total:
        links.append(fhir.BundleLink(relation="next", url=_page_url(base_url, query, query.offset + query.count)))
    return fhir.Bundle(
        id=str(uuid.uuid4()),
        meta=fhir.Meta(lastUpdated=datetime.now(UTC)),
        type="searchset",
        total=result.total,
        link=links,
        entry=entries or None,
    )
