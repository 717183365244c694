"""FHIR search on the store: parse the query, run it with keyset paging, answer with a searchset Bundle.

http://hl7.org/fhir/R4/search.html. Unknown parameters are ignored and reported in an
OperationOutcome entry, unless the client sent `Prefer: handling=strict`, which turns them
into a 400. Pages are keyset pages: a `next` link carries the sort key of the page's last
entry (an opaque `_cursor`), so resources created meanwhile never shift what a later page holds.
"""

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal, or_, select, text
from sqlalchemy.orm import Session

from storage.fhir import criteria, definitions, store
from storage import fhir
from storage.errors import InvalidSearch
from storage.fhir.index import EARLIEST, LATEST
from storage.tables.base import UTCDateTime
from storage.tables.fhir import FhirResource, FhirSearchIndex

COUNT, SORT, CURSOR, TOTAL = "_count", "_sort", "_cursor", "_total"
INCLUDE, REVINCLUDE, SUMMARY, ELEMENTS = "_include", "_revinclude", "_summary", "_elements"
# Format parameters apply to every interaction (http.html#parameters); negotiation checks them.
FORMAT_PARAMS = ("_format", "_pretty")
SUMMARY_VALUES = ("true", "false", "count", "data", "text")
DEFAULT_COUNT = 20
MAX_COUNT = 100
DEFAULT_SORT = (("_lastUpdated", True),)
# At most this many matches of one criterion: the page is read starting from that criterion's
# index entries and sorted; more: resources are walked in sort order, each probed (see _plan).
FEW = 1000
# _total values (search.html#total); "" is the server's choice, which is "estimate" here.
TOTAL_MODES = ("none", "estimate", "accurate")


@dataclass(frozen=True)
class Include:
    """An `_include` (from the searched type) or `_revinclude` (from `source` to it) to follow."""

    source: str
    param: str
    target: str


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: after (next) or before (previous) this sort key."""

    direction: str
    key: tuple[Any, ...]


@dataclass(frozen=True)
class SearchQuery:
    """A parsed search: what to match, in which order, which page, what to include, and what was ignored."""

    resource_type: str
    criteria: tuple[criteria.Criterion, ...]
    count: int
    sort: tuple[tuple[str, bool], ...] = DEFAULT_SORT
    cursor: Cursor | None = None
    includes: tuple[Include, ...] = ()
    revincludes: tuple[Include, ...] = ()
    summary: str = ""
    elements: tuple[str, ...] = ()
    total: str = ""
    accepted: tuple[tuple[str, str], ...] = ()
    unknown: tuple[str, ...] = ()


@dataclass(frozen=True)
class SearchResult:
    """One page of matches (stored JSON), the resources they include, how many match in all, and the page keys."""

    total: int | None
    matches: list[store.Stored]
    included: list[store.Stored]
    next_key: tuple[Any, ...] | None = None
    previous_key: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class QueryPlan:
    """How to read a page: from the index entries of `driver` (a criterion matching at most `bound`
    resources), or, when `driver` is None, by walking the type in sort order."""

    driver: int | None = None
    bound: int | None = None


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidSearch(f"_count must be a whole number, not {value!r}") from None
    if number < 0:
        raise InvalidSearch("_count must not be negative")
    return min(number, MAX_COUNT)


def encode_cursor(cursor: Cursor) -> str:
    """The opaque `_cursor` value of a page link."""
    key = [{"t": v.isoformat()} if isinstance(v, datetime) else v for v in cursor.key]
    text = json.dumps({"d": cursor.direction, "k": key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(value: str) -> Cursor:
    """The page position a `_cursor` value names; InvalidSearch when it is not one of ours."""
    try:
        data = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        key = tuple(datetime.fromisoformat(v["t"]) if isinstance(v, dict) else v for v in data["k"])
        if data["d"] not in ("next", "previous"):
            raise ValueError(data["d"])
        return Cursor(direction=data["d"], key=key)
    except (ValueError, KeyError, TypeError):
        raise InvalidSearch(f"not a valid {CURSOR} value") from None


def _include(resource_type: str, value: str, *, reverse: bool) -> Include | None:
    parts = value.split(":")
    if len(parts) not in (2, 3):
        return None
    source, param = parts[0], parts[1]
    spec = definitions.SEARCH_PARAMS.get(source, {}).get(param)
    if spec is None or spec.type != "reference":
        return None
    if reverse:
        target = resource_type
        if target not in spec.targets or (len(parts) == 3 and parts[2] != target):
            return None
    else:
        if source != resource_type:
            return None
        target = parts[2] if len(parts) == 3 else ""
        if target and (target not in spec.targets or target not in fhir.RESOURCE_CLASSES):
            return None
    return Include(source=source, param=param, target=target)


def _sort(resource_type: str, value: str) -> tuple[tuple[str, bool], ...] | None:
    keys = []
    for item in value.split(","):
        name = item.strip().removeprefix("-")
        if name not in definitions.SEARCH_PARAMS.get(resource_type, {}):
            return None
        keys.append((name, item.strip().startswith("-")))
    return tuple(keys) or None


def parse_query(resource_type: str, items: list[tuple[str, str]], *, strict: bool) -> SearchQuery:
    """Parse query items (in order, repeats kept) into a search on `resource_type`."""
    found: list[criteria.Criterion] = []
    accepted: list[tuple[str, str]] = []
    unknown: list[str] = []
    includes: list[Include] = []
    revincludes: list[Include] = []
    options: dict[str, Any] = {"count": DEFAULT_COUNT, "sort": DEFAULT_SORT, "cursor": None}
    options.update(summary="", elements=(), total="")
    for key, raw in items:
        value = raw.strip()
        if key in FORMAT_PARAMS:
            continue
        if key == COUNT:
            options["count"] = _count(value)
        elif key == CURSOR:
            options["cursor"] = decode_cursor(value)
            continue  # page links add their own
        elif key == TOTAL and value in TOTAL_MODES:
            options["total"] = value
        elif key == SUMMARY and value in SUMMARY_VALUES:
            options["summary"] = value
        elif key == ELEMENTS:
            options["elements"] = tuple(e.strip() for e in value.split(",") if e.strip())
        elif key == SORT and _sort(resource_type, value):
            options["sort"] = _sort(resource_type, value)
        elif key in (INCLUDE, REVINCLUDE) and _include(resource_type, value, reverse=key == REVINCLUDE):
            spec = _include(resource_type, value, reverse=key == REVINCLUDE)
            (revincludes if key == REVINCLUDE else includes).append(spec)  # type: ignore[arg-type]
        elif key.startswith("_") and key.split(":")[0].split(".")[0] not in definitions.SEARCH_PARAMS[resource_type]:
            unknown.append(f"{key}={value}" if key in (INCLUDE, REVINCLUDE, SORT, SUMMARY, TOTAL) else key)
            continue
        else:
            try:
                criterion = criteria.parse(resource_type, key, value)
            except criteria.UnknownParameter:
                unknown.append(key)
                continue
            if criterion is not None:
                found.append(criterion)
        accepted.append((key, raw))
    if unknown and strict:
        raise InvalidSearch(f"unsupported search parameters: {', '.join(unknown)}")
    return SearchQuery(
        resource_type=resource_type,
        criteria=tuple(found),
        includes=tuple(includes),
        revincludes=tuple(revincludes),
        accepted=tuple(accepted),
        unknown=tuple(unknown),
        **options,
    )


# --- running -----------------------------------------------------------------------------


def _sort_column(resource_type: str, name: str, descending: bool) -> Any:
    if name == "_lastUpdated":
        return FhirResource.last_updated
    if name == "_id":
        return FhirResource.resource_id
    spec = definitions.SEARCH_PARAMS[resource_type][name]
    idx = FhirSearchIndex
    owner = and_(
        idx.resource_type == resource_type, idx.resource_id == FhirResource.resource_id, idx.param == name
    )
    # A resource sorts by its largest value descending and its smallest ascending (search.html#sort);
    # one without a value sorts last.
    column: Any
    if spec.type == "date":
        column = idx.high if descending else idx.low
        sentinel = literal(EARLIEST if descending else LATEST, UTCDateTime())
    else:
        column, sentinel = idx.value, literal("")
    aggregate = func.max(column) if descending else func.min(column)
    return func.coalesce(select(aggregate).where(owner).scalar_subquery(), sentinel)


def _after(columns: list[tuple[ColumnElement[Any], bool]], key: tuple[Any, ...]) -> ColumnElement[bool]:
    # Keyset condition: (c1, c2, ...) comes after `key` in the sort order, column by column. The
    # leading bound on c1 alone is implied by the rest; it gives the database an index range.
    alternatives = []
    for i, (column, descending) in enumerate(columns):
        equal = [c == key[j] for j, (c, _) in enumerate(columns[:i])]
        alternatives.append(and_(*equal, column < key[i] if descending else column > key[i]))
    first, first_descending = columns[0]
    bound = first <= key[0] if first_descending else first >= key[0]
    return and_(bound, or_(*alternatives))


def _positive(criterion: criteria.Criterion) -> bool:
    return criterion.modifier not in ("missing", "not")


def _capped_count(session: Session, resource_type: str, criterion: criteria.Criterion, cap: int) -> int:
    # Counting stops after cap + 1 index entries, so a broad criterion costs no more than a narrow one.
    inner = criteria.positive_ids(resource_type, criterion).limit(cap + 1).subquery()
    return session.scalar(select(func.count()).select_from(inner)) or 0


def plan(session: Session, query: SearchQuery) -> QueryPlan:
    """Start from the narrowest criterion when it matches at most FEW resources, else walk in sort order.

    Starting from the index suits few matches (they are found directly, then sorted); walking the
    type in sort order and probing each resource suits many (a page fills after a few probes).
    """
    best: QueryPlan = QueryPlan()
    for i, criterion in enumerate(query.criteria):
        if not _positive(criterion):
            continue
        cap = FEW if best.bound is None else best.bound - 1
        if cap < 0:
            break
        found = _capped_count(session, query.resource_type, criterion, cap)
        if found <= cap:
            best = QueryPlan(driver=i, bound=found)
    return best


def _where(stmt: Any, query: SearchQuery, chosen: QueryPlan) -> Any:
    stmt = stmt.where(FhirResource.resource_type == query.resource_type)
    for i, criterion in enumerate(query.criteria):
        stmt = stmt.where(criteria.condition(query.resource_type, criterion, drive=i == chosen.driver))
    return stmt


def _page(
    session: Session, query: SearchQuery, chosen: QueryPlan
) -> tuple[list[store.Stored], tuple[Any, ...] | None, tuple[Any, ...] | None]:
    columns: list[tuple[Any, bool]] = [(_sort_column(query.resource_type, name, desc), desc) for name, desc in query.sort]
    if not any(name == "_id" for name, _ in query.sort):
        # Ties break on the id in the direction of the last key, so the default order
        # (-_lastUpdated, -_id) is exactly the (type, last_updated, resource_id) index read backwards.
        columns.append((FhirResource.resource_id, query.sort[-1][1]))
    backwards = query.cursor is not None and query.cursor.direction == "previous"
    # A previous page is read in reverse order, then turned round.
    walk = [(c, d != backwards) for c, d in columns]
    stmt = _where(select(FhirResource.resource_id, FhirResource.content, *(c for c, _ in columns)), query, chosen)
    if query.cursor is not None:
        stmt = stmt.where(_after(walk, query.cursor.key))
    # Few matches: sort an expression, so that the database starts from the driving criterion's
    # index entries and sorts those few; left to itself SQLite walks the whole type in sort order.
    few = chosen.driver is not None
    order = [(func.coalesce(c, c) if few else c, d) for c, d in walk]
    stmt = stmt.order_by(*(c.desc() if d else c.asc() for c, d in order)).limit(query.count + 1)
    rows = list(session.execute(stmt))
    more = len(rows) > query.count
    rows = rows[: query.count]
    if backwards:
        rows.reverse()
    keys = [tuple(row[2:]) for row in rows]
    matches = [store.Stored(query.resource_type, row[0], row[1]) for row in rows]
    if not rows:
        return matches, None, None
    has_next = more if not backwards else True
    has_previous = (query.cursor is not None) if not backwards else more
    return matches, keys[-1] if has_next else None, keys[0] if has_previous else None


def count(session: Session, query: SearchQuery, chosen: QueryPlan | None = None) -> int:
    """How many resources match the query's criteria (exactly)."""
    inner = _where(select(FhirResource.resource_id), query, chosen or QueryPlan()).subquery()
    return session.scalar(select(func.count()).select_from(inner)) or 0


# Resources sampled for an estimated total: the newest of the type, each probed.
SAMPLE = 1000


def estimate(session: Session, query: SearchQuery) -> int:
    """A rough number of matches (search.html#total, `_total=estimate`): the share of the type's
    newest SAMPLE resources that match, times the size of the type."""
    res = FhirResource
    everything = session.scalar(select(func.count()).select_from(res).where(res.resource_type == query.resource_type)) or 0
    if everything == 0:
        return 0
    # The oldest resource of the sample; the sample is everything from there on, in index order.
    edge = session.execute(
        select(res.last_updated, res.resource_id)
        .where(res.resource_type == query.resource_type)
        .order_by(res.last_updated.desc(), res.resource_id.desc())
        .offset(min(everything, SAMPLE) - 1)
        .limit(1)
    ).first()
    sample = _where(select(res.resource_id), query, QueryPlan())
    if edge is not None:
        newer = or_(res.last_updated > edge[0], and_(res.last_updated == edge[0], res.resource_id >= edge[1]))
        sample = sample.where(res.last_updated >= edge[0], newer)
    matched = session.scalar(select(func.count()).select_from(sample.subquery())) or 0
    return round(everything * matched / min(everything, SAMPLE))


def _total(session: Session, query: SearchQuery, chosen: QueryPlan) -> int | None:
    # The server's choice (no _total) is an exact count when a criterion bounds the matches to a
    # few, and no total otherwise: counting a broad intersection costs as much as reading it all.
    if query.summary == "count" or query.total == "accurate" or (chosen.driver is not None and query.total != "none"):
        return count(session, query, chosen)
    if query.total == "estimate":
        return estimate(session, query)
    if not query.criteria and query.total != "none":
        return count(session, query, chosen)
    return None


def run(session: Session, query: SearchQuery, *, may_include: Any) -> SearchResult:
    """Run the search; `may_include(type)` says which included resource types the caller may read."""
    if session.get_bind().dialect.name == "postgresql":
        # A page is a few index steps; PostgreSQL's parallel workers cost more to start than the
        # whole query (seen at 100,000 reports: 50 ms of start-up for 6 ms of work). And the best
        # plan depends on the values (how many match), so never a generic plan of a statement
        # psycopg prepared after a few runs (seen: 5 ms became 900 ms from the sixth run on).
        session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    chosen = plan(session, query)
    total = _total(session, query, chosen)
    if query.summary == "count" or query.count == 0:
        return SearchResult(total=total, matches=[], included=[])
    matches, next_key, previous_key = _page(session, query, chosen)
    ids = [m.id for m in matches]
    refs: list[str] = []
    for inc in query.includes:
        for ref in store.references(session, query.resource_type, ids, inc.param):
            kind = ref.split("/", 1)[0]
            if (not inc.target or kind == inc.target) and may_include(kind) and ref not in refs:
                refs.append(ref)
    targets = [f"{query.resource_type}/{i}" for i in ids]
    for inc in query.revincludes:
        if may_include(inc.source):
            refs.extend(
                r
                for r in (f"{inc.source}/{i}" for i in store.referring(session, inc.source, inc.param, targets))
                if r not in refs
            )
    matched = {f"{query.resource_type}/{i}" for i in ids}
    included = store.read_stored(session, [r for r in refs if r not in matched])
    return SearchResult(
        total=total, matches=matches, included=included, next_key=next_key, previous_key=previous_key
    )
