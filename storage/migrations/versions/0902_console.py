"""the console (issue 16): people and their sessions, process heartbeats, report figures, overview indexes

Revision ID: 0902
Revises: 0901
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0902"
down_revision: str | None = "0901"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=512), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_sign_in_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_name"], ["users.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    op.create_index("ix_console_sessions_user_name", "console_sessions", ["user_name"])
    op.create_index("ix_console_sessions_last_seen_at", "console_sessions", ["last_seen_at"])
    op.create_table(
        "process_heartbeats",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("name", "host", "pid"),
    )
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("positive", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("study_received_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_reports_created_at", ["created_at"])
    op.create_index("ix_inference_jobs_model_created", "inference_jobs", ["model", "created_at"])
    op.create_index("ix_instance_versions_received_at", "instance_versions", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_instance_versions_received_at", table_name="instance_versions")
    op.drop_index("ix_inference_jobs_model_created", table_name="inference_jobs")
    with op.batch_alter_table("reports") as batch:
        batch.drop_index("ix_reports_created_at")
        batch.drop_column("study_received_at")
        batch.drop_column("positive")
    op.drop_table("process_heartbeats")
    op.drop_index("ix_console_sessions_last_seen_at", table_name="console_sessions")
    op.drop_index("ix_console_sessions_user_name", table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_table("users")
