"""The admin API's integer parameters, bounded to what SQL can store (issue 18).

SQLite and PostgreSQL integers are signed 64-bit: a larger id, offset or count fails inside the
database driver (OverflowError), which is a server error for a client's mistake. Bounding them
here makes it a 422 problem detail like any other invalid parameter.
"""

from typing import Annotated

from fastapi import Path, Query
from pydantic import Field

# The largest signed 64-bit integer (SQL BIGINT; SQLite INTEGER).
SQL_INT_MAX = 2**63 - 1

RowId = Annotated[int, Path(ge=1, le=SQL_INT_MAX, description="a row id")]
RowIdFilter = Annotated[int | None, Query(ge=1, le=SQL_INT_MAX)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=SQL_INT_MAX)]
# A body field: a count or size that is stored, as it is or with None for "the global setting".
StoredInt = Annotated[int, Field(le=SQL_INT_MAX)]
