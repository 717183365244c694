"""Search speed and AuditEvent search: covering search-index indexes, audit agent and entity indexes

Revision ID: 0302
Revises: 0401

The search index's indexes carry the owner's id (and the token system), so a search starts
from one parameter's entries and probes the others without reading table rows; the audit
table gets indexes for AuditEvent searches by agent and by entity.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0302"
down_revision: str | None = "0401"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SEARCH_INDEXES = {
    "ix_fhir_search_lookup": (["resource_type", "param", "value", "resource_id"], ["resource_type", "param", "value", "resource_id", "system"]),
    "ix_fhir_search_owner": (["resource_type", "resource_id"], ["resource_type", "resource_id", "param", "value", "low", "high"]),
    "ix_fhir_search_low": (["resource_type", "param", "low"], ["resource_type", "param", "low", "resource_id"]),
    "ix_fhir_search_high": (["resource_type", "param", "high"], ["resource_type", "param", "high", "resource_id"]),
}


def upgrade() -> None:
    for name, (_old, new) in _SEARCH_INDEXES.items():
        op.drop_index(name, table_name="fhir_search_index")
        op.create_index(name, "fhir_search_index", new, unique=False)
    op.create_index("ix_audit_events_agent", "audit_events", ["agent_who", "id"], unique=False)
    op.create_index("ix_audit_events_entity", "audit_events", ["entity_what", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_events_entity", table_name="audit_events")
    op.drop_index("ix_audit_events_agent", table_name="audit_events")
    for name, (old, _new) in _SEARCH_INDEXES.items():
        op.drop_index(name, table_name="fhir_search_index")
        op.create_index(name, "fhir_search_index", old, unique=False)
