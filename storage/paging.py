"""Pages of rows sorted on named columns: what every admin API list answers (issue 16).

A list names the columns it may be sorted on; the caller (the admin API) checks a request's sort
keys against those names before asking, so an unknown key is a bad request, never a query.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import QueryableAttribute, Session

T = TypeVar("T")
# Sort key -> the column it sorts on.
Columns = Mapping[str, QueryableAttribute[Any]]


@dataclass(frozen=True)
class Order:
    """One sort key and its direction."""

    key: str
    descending: bool = False


def page(
    session: Session,
    stmt: Select[T],
    *,
    columns: Columns,
    order: Sequence[Order],
    tiebreak: Sequence[QueryableAttribute[Any]],
    limit: int,
    offset: int,
) -> tuple[list[T], int]:
    """One page of `stmt`'s rows in `order` (then `tiebreak`, so pages never overlap) and how many match in all."""
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    keys = [columns[o.key].desc() if o.descending else columns[o.key].asc() for o in order]
    rows = session.scalars(stmt.order_by(None).order_by(*keys, *tiebreak).limit(limit).offset(offset))
    return list(rows), total
