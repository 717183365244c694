"""Routing rules as data (seeded with the rules the router used before), the called AE of a study (issue 7)

Revision ID: 0701
Revises: 0302
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0701"
down_revision: str | None = "0302"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# integration.rules.DEFAULT_RULES as they were when this migration was written (name, priority,
# definition): a fresh install, or one upgraded from before issue 7, routes as it did.
DEFAULT_RULES = (
    (
        "chest-radiographs-to-pneumonia-model",
        100,
        (
            '{"name":"chest-radiographs-to-pneumonia-model","match":{"modalities":["CR","DX"],"body_parts":["CHEST"]},'
            '"run":[{"model":"chest-xray-pneumonia"}]}'
        ),
    ),
    (
        "brain-mr-to-brain-extraction",
        100,
        (
            '{"name":"brain-mr-to-brain-extraction","match":{"modalities":["MR"],"body_parts":["BRAIN","HEAD"]},'
            '"run":[{"model":"brain-extraction"}]}'
        ),
    ),
    (
        "ct-and-mr-to-modality-check",
        200,
        (
            '{"name":"ct-and-mr-to-modality-check","priority":200,"match":{"modalities":["CT","MR"]},'
            '"run":[{"model":"modality-check"}]}'
        ),
    ),
    (
        "report-text-to-triage",
        100,
        '{"name":"report-text-to-triage","trigger":"report","run":[{"model":"report-triage"}]}',
    ),
)


def upgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("called_ae", sa.String(length=16), server_default="", nullable=False))
    rules = op.create_table(
        "routing_rules",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    now = datetime.now(UTC)
    op.bulk_insert(
        rules,
        [
            {
                "name": name,
                "priority": priority,
                "enabled": True,
                "definition": definition,
                "created_at": now,
                "updated_at": now,
            }
            for name, priority, definition in DEFAULT_RULES
        ],
    )


def downgrade() -> None:
    op.drop_table("routing_rules")
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_column("called_ae")
