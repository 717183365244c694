"""forwards of studies to DICOM destinations and their instances (issue 7)

Revision ID: 0702
Revises: 0701
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0702"
down_revision: str | None = "0701"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "forwards",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("destination_id", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("correlation_id", sa.String(length=36), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["destination_id"], ["destinations.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("destination_id", "study_uid", "revision", name="uq_forward_study_revision"),
    )
    op.create_index("ix_forwards_destination_id", "forwards", ["destination_id"])
    op.create_index("ix_forwards_study_uid", "forwards", ["study_uid"])
    op.create_index("ix_forwards_correlation_id", "forwards", ["correlation_id"])
    op.create_index("ix_forwards_due", "forwards", ["destination_id", "status", "next_attempt_at"])
    op.create_table(
        "forward_instances",
        sa.Column("forward_id", sa.Integer(), nullable=False),
        sa.Column("sop_uid", sa.String(length=64), nullable=False),
        sa.Column("object_key", sa.String(length=256), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("dicom_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["forward_id"], ["forwards.id"]),
        sa.PrimaryKeyConstraint("forward_id", "sop_uid"),
    )


def downgrade() -> None:
    op.drop_table("forward_instances")
    op.drop_index("ix_forwards_due", table_name="forwards")
    op.drop_index("ix_forwards_correlation_id", table_name="forwards")
    op.drop_index("ix_forwards_study_uid", table_name="forwards")
    op.drop_index("ix_forwards_destination_id", table_name="forwards")
    op.drop_table("forwards")
