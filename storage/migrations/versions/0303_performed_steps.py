"""performed procedure steps (MPPS): the expected instance count of a study (issue 3)

Revision ID: 0303
Revises: 0801
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0303"
down_revision: str | None = "0801"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "performed_steps",
        sa.Column("sop_uid", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("accession_number", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("instances", sa.Integer(), nullable=True),
        sa.Column("calling_ae", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sop_uid"),
    )
    with op.batch_alter_table("performed_steps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_performed_steps_study_uid"), ["study_uid"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("performed_steps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_performed_steps_study_uid"))
    op.drop_table("performed_steps")
