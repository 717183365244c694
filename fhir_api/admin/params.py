"""The admin API's integer parameters, bounded to what the database stores (issue 18).

An id, offset or count larger than its column fails inside the database driver (OverflowError, or
PostgreSQL's "integer out of range"), which is a server error for a client's mistake. Bounding
them here makes it a 422 problem detail like any other invalid parameter. Ids and the counts we
store are `Integer` columns: 32-bit on PostgreSQL, the narrower of the two databases.
"""

from typing import Annotated

from fastapi import Path, Query
from pydantic import Field

# The largest value of an Integer column on PostgreSQL (signed 32 bits).
MAX_INT = 2**31 - 1

Id = Annotated[int, Path(ge=1, le=MAX_INT, description="a row id")]
QueryId = Annotated[int | None, Query(ge=1, le=MAX_INT)]
Limit = Annotated[int, Query(ge=1, le=1000, description="items per page, at most 1000")]
Offset = Annotated[int, Query(ge=0, le=MAX_INT, description="items to skip")]
# A body field: a count or size that is stored, as it is or with None for "the global setting".
StoredInt = Annotated[int, Field(le=MAX_INT)]
