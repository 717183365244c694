"""DICOM ingest: per-peer settings, instance versions, expected instance count of a study

Revision ID: 0101
Revises: 0201
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0101"
down_revision: str | None = "0201"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dicom_peers",
        sa.Column("ae_title", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("quiet_period_seconds", sa.Float(), nullable=True),
        sa.Column("max_associations", sa.Integer(), nullable=True),
        sa.Column("max_pdu", sa.Integer(), nullable=True),
        sa.Column("dimse_timeout", sa.Float(), nullable=True),
        sa.Column("network_timeout", sa.Float(), nullable=True),
        sa.Column("duplicate_policy", sa.String(length=16), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ae_title"),
    )
    op.create_table(
        "instance_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sop_uid", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("object_key", sa.String(length=256), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("calling_ae", sa.String(length=16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sop_uid", "version", name="uq_instance_version"),
    )
    with op.batch_alter_table("instance_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instance_versions_sop_uid"), ["sop_uid"], unique=False)
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expected_instances", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_column("expected_instances")
    with op.batch_alter_table("instance_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_versions_sop_uid"))
    op.drop_table("instance_versions")
    op.drop_table("dicom_peers")
