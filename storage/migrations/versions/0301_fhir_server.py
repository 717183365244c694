"""FHIR server: richer search index, history methods, API clients, client assertions, subscription deliveries

Revision ID: 0301
Revises: 0003

The search index changes shape (token systems in their own column, date ranges, exact strings),
so its rows are emptied here; the API rebuilds the rows of every stored resource at start-up
(storage.fhir.store.reindex_missing), because a migration must not import application code.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0301"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM fhir_search_index")
    with op.batch_alter_table("fhir_search_index", schema=None) as batch_op:
        batch_op.add_column(sa.Column("system", sa.String(length=256), server_default="", nullable=False))
        batch_op.add_column(sa.Column("exact", sa.String(length=256), server_default="", nullable=False))
        batch_op.add_column(sa.Column("low", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("high", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_index("ix_fhir_search_lookup")
        batch_op.create_index("ix_fhir_search_lookup", ["resource_type", "param", "value", "resource_id"], unique=False)
        batch_op.create_index("ix_fhir_search_low", ["resource_type", "param", "low"], unique=False)
        batch_op.create_index("ix_fhir_search_high", ["resource_type", "param", "high"], unique=False)
    with op.batch_alter_table("fhir_resource_history", schema=None) as batch_op:
        batch_op.add_column(sa.Column("method", sa.String(length=8), server_default="PUT", nullable=False))
        batch_op.create_index("ix_fhir_history_type_updated", ["resource_type", "last_updated"], unique=False)
    with op.batch_alter_table("fhir_resources", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fhir_resources_type_updated", ["resource_type", "last_updated", "resource_id"], unique=False
        )
    op.create_table(
        "api_clients",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("auth_method", sa.String(length=32), nullable=False),
        sa.Column("jwks", sa.Text(), nullable=False),
        sa.Column("secret_hash", sa.String(length=256), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id"),
    )
    op.create_table(
        "client_assertions",
        sa.Column("jti", sa.String(length=256), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti"),
    )
    with op.batch_alter_table("client_assertions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_client_assertions_expires_at"), ["expires_at"], unique=False)
    op.create_table(
        "subscription_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscription_id", "resource_type", "resource_id", "version_id", name="uq_delivery_change"),
    )
    with op.batch_alter_table("subscription_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_subscription_deliveries_pending", ["delivered_at", "subscription_id", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("subscription_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_subscription_deliveries_pending")
    op.drop_table("subscription_deliveries")
    with op.batch_alter_table("client_assertions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_client_assertions_expires_at"))
    op.drop_table("client_assertions")
    op.drop_table("api_clients")
    with op.batch_alter_table("fhir_resources", schema=None) as batch_op:
        batch_op.drop_index("ix_fhir_resources_type_updated")
    with op.batch_alter_table("fhir_resource_history", schema=None) as batch_op:
        batch_op.drop_index("ix_fhir_history_type_updated")
        batch_op.drop_column("method")
    op.execute("DELETE FROM fhir_search_index")
    with op.batch_alter_table("fhir_search_index", schema=None) as batch_op:
        batch_op.drop_index("ix_fhir_search_high")
        batch_op.drop_index("ix_fhir_search_low")
        batch_op.drop_index("ix_fhir_search_lookup")
        batch_op.create_index("ix_fhir_search_lookup", ["resource_type", "param", "value"], unique=False)
        batch_op.drop_column("high")
        batch_op.drop_column("low")
        batch_op.drop_column("exact")
        batch_op.drop_column("system")
