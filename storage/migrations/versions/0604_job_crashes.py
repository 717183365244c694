"""inference jobs count the crashes of their model's runner, so a poison input is not retried forever (issue 6)

Revision ID: 0604
Revises: 0303
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0604"
down_revision: str | None = "0303"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inference_jobs") as batch:
        batch.add_column(sa.Column("crashes", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("inference_jobs") as batch:
        batch.drop_column("crashes")
