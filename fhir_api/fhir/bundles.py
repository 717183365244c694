"""Bundles we answer with: searchset (search.html#return) and history (http.html#history)."""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import urlencode

from storage import fhir
from fhir_api.fhir import search
from storage.fhir import store
from fhir_api.responses import operation_outcome


def etag(version: int | str) -> str:
    """The weak ETag of a version (http.html#versioning)."""
    return f'W/"{version}"'


class Paged(Protocol):
    """What a searchset says of the search it answers: the parameters it ran with, its page size, what it ignored."""

    @property
    def accepted(self) -> tuple[tuple[str, str], ...]:
        """The parameters it ran with, as given (`_count` and `_cursor` are set per link)."""

    @property
    def count(self) -> int:
        """Its page size."""

    @property
    def unknown(self) -> tuple[str, ...]:
        """The parameters it ignored."""


def _page_url(base_url: str, resource_type: str, query: Paged, cursor: search.Cursor | None) -> str:
    items = [(k, v) for k, v in query.accepted if k != search.COUNT]
    items.append((search.COUNT, str(query.count)))
    if cursor is not None:
        items.append((search.CURSOR, search.encode_cursor(cursor)))
    return f"{base_url}/{resource_type}?{urlencode(items)}"


def _shaped(found: store.Stored, query: search.SearchQuery) -> str:
    # _elements and _summary cut the resource down, which needs the model; otherwise the stored
    # JSON goes out as stored.
    if query.elements:
        return fhir.dump(fhir.subset(found.resource(), elements=query.elements))
    if query.summary in ("true", "text", "data"):
        return fhir.dump(fhir.subset(found.resource(), summary=query.summary))
    return found.content


def searchset(result: search.SearchResult, query: search.SearchQuery, *, base_url: str) -> str:
    """The searchset Bundle of a search of the FHIR store as JSON: match and include entries."""

    def url(found: store.Stored) -> str:
        return f"{base_url}/{found.resource_type}/{found.id}"

    entries = [(url(found), _shaped(found, query), "match") for found in result.matches]
    entries += [(url(found), found.content, "include") for found in result.included]
    following = search.Cursor(direction="next", key=result.next_key) if result.next_key is not None else None
    preceding = search.Cursor(direction="previous", key=result.previous_key) if result.previous_key is not None else None
    return page_bundle(
        query.resource_type,
        query,
        entries,
        base_url=base_url,
        total=result.total,
        at=query.cursor,
        following=following,
        preceding=preceding,
    )


def page_bundle(
    resource_type: str,
    query: Paged,
    entries: list[tuple[str, str, str]],
    *,
    base_url: str,
    total: int | None,
    at: search.Cursor | None = None,
    following: search.Cursor | None = None,
    preceding: search.Cursor | None = None,
) -> str:
    """A searchset Bundle as JSON (search.html#return): the total, self/next/previous links, the
    entries given as (fullUrl, resource JSON, search mode), and an outcome naming the parameters
    that were ignored. `at` is where this page starts, `following`/`preceding` the pages around it."""
    if query.unknown:
        outcome = operation_outcome(
            "warning", "not-supported", f"ignored unsupported search parameters: {', '.join(query.unknown)}"
        )
        entries = [*entries, (f"urn:uuid:{uuid.uuid4()}", fhir.dump(outcome), "outcome")]
    # The self link shows the search as executed, without the parameters we ignored.
    links = [fhir.BundleLink(relation="self", url=_page_url(base_url, resource_type, query, at))]
    if following is not None:
        links.append(fhir.BundleLink(relation="next", url=_page_url(base_url, resource_type, query, following)))
    if preceding is not None:
        links.append(fhir.BundleLink(relation="previous", url=_page_url(base_url, resource_type, query, preceding)))
    bundle = fhir.Bundle(
        id=str(uuid.uuid4()),
        meta=fhir.Meta(lastUpdated=datetime.now(UTC)),
        type="searchset",
        total=total,
        link=links,
    )
    return fhir.dump_bundle(bundle, entries)


def history(
    versions: Sequence[store.Version], *, base_url: str, self_url: str, next_url: str | None, total: int | None
) -> fhir.Bundle:
    """A history Bundle, newest version first; a deletion is an entry without a resource."""
    entries = []
    for v in versions:
        url = f"{v.resource_type}/{v.resource_id}"
        status = {"POST": "201 Created", "DELETE": "204 No Content"}.get(v.method, "200 OK")
        entries.append(
            fhir.BundleEntry(
                fullUrl=f"{base_url}/{url}",
                resource=v.resource,
                request=fhir.BundleEntryRequest(method=v.method, url=url if v.method != "POST" else v.resource_type),
                response=fhir.BundleEntryResponse(
                    status=status, etag=etag(v.version_id), lastModified=v.last_updated
                ),
            )
        )
    links = [fhir.BundleLink(relation="self", url=self_url)]
    if next_url is not None:
        links.append(fhir.BundleLink(relation="next", url=next_url))
    return fhir.Bundle(
        id=str(uuid.uuid4()),
        meta=fhir.Meta(lastUpdated=datetime.now(UTC)),
        type="history",
        total=total,
        link=links,
        entry=entries or None,
    )
