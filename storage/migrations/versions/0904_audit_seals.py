"""keyed seals of audit records (issue 18): HMAC-SHA256 of each record's hash under DOCTORAI_AUDIT_KEY

Revision ID: 0904
Revises: 0903
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0904"
down_revision: str | None = "0903"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN (no table rebuild), so the append-only triggers of 0002 stay in place.
    op.add_column("audit_events", sa.Column("seal", sa.String(length=64), nullable=False, server_default=""))


def downgrade() -> None:
    # ALTER TABLE DROP COLUMN (SQLite 3.35 and later too): no rebuild, the triggers stay.
    op.drop_column("audit_events", "seal")
