"""The one list shape of the admin API: `{"total", "items", "limit", "offset"}`, with `limit`, `offset`
and `sort` on every list (issue 16).

`sort` names columns, comma-separated, each with a leading `-` for descending (as FHIR's `_sort`);
a name the list does not offer is a 422, never a query. Numbers too large for the database's
integers are 422 as well, not a 500 (fhir_api/admin/params.py).
"""

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.orm import QueryableAttribute, Session

from fhir_api.admin.params import Limit, Offset
from storage.paging import Columns, Order, page

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list: its items, how many match in all, and where the page is."""

    total: int
    items: list[T]
    limit: int
    offset: int


@dataclass(frozen=True)
class Paging:
    """Which page, in which order."""

    limit: int
    offset: int
    order: tuple[Order, ...]

    def of(self, items: list[T], total: int) -> Page[T]:
        """The answer for a page of items."""
        return Page[T](total=total, items=items, limit=self.limit, offset=self.offset)

    def rows(
        self, session: Session, stmt: Select[T], columns: Columns, tiebreak: Sequence[QueryableAttribute[Any]]
    ) -> tuple[list[T], int]:
        """This page of a statement's rows in this order (then `tiebreak`), and how many match in all."""
        return page(
            session, stmt, columns=columns, order=self.order, tiebreak=tiebreak, limit=self.limit, offset=self.offset
        )


def parse_sort(raw: str, allowed: Collection[str]) -> tuple[Order, ...]:
    """The orders of a `sort` value; 422 naming the allowed columns when one is not among them."""
    orders = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        key = part.removeprefix("-")
        if key not in allowed:
            message = f"cannot sort on {key!r}; sort on {', '.join(allowed)}"
            raise RequestValidationError([{"loc": ["query", "sort"], "msg": message, "type": "value_error"}])
        orders.append(Order(key, descending=part.startswith("-")))
    return tuple(orders)


def sorted_by(columns: Collection[str], default: Sequence[Order] = ()) -> Callable[..., Paging]:
    """A dependency reading `limit`, `offset` and `sort` (one of `columns`) for one list."""
    names = ", ".join(columns)

    def paging(
        limit: Limit = 100,
        offset: Offset = 0,
        sort: Annotated[
            str, Query(max_length=200, description=f"comma-separated columns, `-` for descending: {names}")
        ] = "",
    ) -> Paging:
        return Paging(limit=limit, offset=offset, order=parse_sort(sort, columns) or tuple(default))

    return paging


def page_of(items: Sequence[T], paging: Paging, field: Callable[[T, str], Any]) -> Page[T]:
    """A page of a list held in memory (configuration: peers, destinations, rules, models, clients);
    items without a value for a sort key come last."""
    ordered = list(items)
    for order in reversed(paging.order):  # stable sorts, least significant key first
        present = [item for item in ordered if field(item, order.key) is not None]
        present.sort(key=lambda item: field(item, order.key), reverse=order.descending)
        ordered = present + [item for item in ordered if field(item, order.key) is None]
    return paging.of(ordered[paging.offset : paging.offset + paging.limit], len(ordered))
