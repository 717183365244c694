"""query/retrieve and storage commitment (issue 17): the keys C-FIND and QIDO-RS match, what each
DICOM peer may query or retrieve and where it listens, and storage commitment requests

Revision ID: 0901
Revises: 0604
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0901"
down_revision: str | None = "0604"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STUDY_TEXT = (
    ("patient_name", 256),
    ("patient_name_folded", 256),
    ("patient_birth_date", 8),
    ("patient_sex", 16),
    ("study_time", 16),
    ("study_id", 16),
    ("referring_physician_name", 256),
    ("referring_physician_folded", 256),
)


def upgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        for name, length in _STUDY_TEXT:
            batch_op.add_column(sa.Column(name, sa.String(length=length), server_default="", nullable=False))
        # 0: indexed before these columns existed; `doctorai index backfill` reads them from the objects.
        batch_op.add_column(sa.Column("index_version", sa.Integer(), server_default="0", nullable=False))
        batch_op.create_index(batch_op.f("ix_studies_study_date"), ["study_date"], unique=False)
    with op.batch_alter_table("dicom_peers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("port", sa.Integer(), nullable=True))
        for name in ("may_find", "may_move", "may_get"):
            batch_op.add_column(sa.Column(name, sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table(
        "storage_commitments",
        sa.Column("transaction_uid", sa.String(length=64), nullable=False),
        sa.Column("calling_ae", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("instances", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("transaction_uid"),
    )
    with op.batch_alter_table("storage_commitments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_storage_commitments_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_storage_commitments_next_attempt_at"), ["next_attempt_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("storage_commitments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_storage_commitments_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_storage_commitments_status"))
    op.drop_table("storage_commitments")
    with op.batch_alter_table("dicom_peers", schema=None) as batch_op:
        for name in ("may_get", "may_move", "may_find", "port"):
            batch_op.drop_column(name)
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_studies_study_date"))
        batch_op.drop_column("index_version")
        for name, _ in reversed(_STUDY_TEXT):
            batch_op.drop_column(name)
