"""forwards of results (a job's DICOM SR) next to forwards of studies (issue 7)

Revision ID: 0801
Revises: 0703
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0801"
down_revision: str | None = "0703"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite changes a unique constraint only by copying the table (env.py render_as_batch).
    with op.batch_alter_table("forwards") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=16), server_default="study", nullable=False))
        batch.add_column(sa.Column("job_id", sa.String(length=36), server_default="", nullable=False))
        batch.drop_constraint("uq_forward_study_revision", type_="unique")
        batch.create_unique_constraint("uq_forward_subject", ["destination_id", "study_uid", "revision", "job_id"])


def downgrade() -> None:
    op.execute("DELETE FROM forward_instances WHERE forward_id IN (SELECT id FROM forwards WHERE kind = 'result')")
    op.execute("DELETE FROM forwards WHERE kind = 'result'")
    with op.batch_alter_table("forwards") as batch:
        batch.drop_constraint("uq_forward_subject", type_="unique")
        batch.create_unique_constraint("uq_forward_study_revision", ["destination_id", "study_uid", "revision"])
        batch.drop_column("job_id")
        batch.drop_column("kind")
