"""The FHIR store (storage/fhir/store.py): current resources, every version of them, their search
index, and the Subscription notifications a change owes."""

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.tables.base import Base, UTCDateTime


class FhirResource(Base):
    """The current version of a FHIR resource, as R4 JSON."""

    __tablename__ = "fhir_resources"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    content: Mapped[str] = mapped_column(Text)

    # Search pages walk (last_updated, id) per type: keyset paging (storage/fhir/store.py).
    __table_args__ = (Index("ix_fhir_resources_type_updated", "resource_type", "last_updated", "resource_id"),)


class FhirResourceVersion(Base):
    """Every version of every FHIR resource, for vread and history."""

    __tablename__ = "fhir_resource_history"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime())
    content: Mapped[str] = mapped_column(Text)
    # The interaction that made this version: POST, PUT or DELETE (a DELETE version's content is "").
    method: Mapped[str] = mapped_column(String(8), default="PUT", server_default="PUT")

    __table_args__ = (Index("ix_fhir_history_type_updated", "resource_type", "last_updated"),)


class FhirSearchIndex(Base):
    """One search-parameter value of a current resource (token, reference, date or string)."""

    __tablename__ = "fhir_search_index"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    # Token code, "Type/id" reference, or normalised string; "" for dates.
    value: Mapped[str] = mapped_column(String(256))
    # Token system ("" when none), the string as written (for :exact), and date ranges (closed, UTC).
    system: Mapped[str] = mapped_column(String(256), default="", server_default="")
    exact: Mapped[str] = mapped_column(String(256), default="", server_default="")
    low: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    high: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    # Covering indexes (migration 0302): a search starts from the matching entries of one
    # parameter (lookup, low, high: the owner's id is in the index) and probes the others per
    # resource and lists a page's references (owner: type, id and parameter equal, so SQLite,
    # which plans without statistics, prefers it to scanning a parameter's entries), all without
    # reading table rows (fhir_api/fhir/search.py, storage/fhir/store.py).
    __table_args__ = (
        Index("ix_fhir_search_lookup", "resource_type", "param", "value", "resource_id", "system"),
        Index("ix_fhir_search_owner", "resource_type", "resource_id", "param", "value", "low", "high"),
        Index("ix_fhir_search_low", "resource_type", "param", "low", "resource_id"),
        Index("ix_fhir_search_high", "resource_type", "param", "high", "resource_id"),
    )


class SubscriptionDelivery(Base):
    """One notification owed to a Subscription, queued with the change that caused it."""

    __tablename__ = "subscription_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # A deliverer holds a row until this time, so two delivery processes never send it at once.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        UniqueConstraint("subscription_id", "resource_type", "resource_id", "version_id", name="uq_delivery_change"),
        Index("ix_subscription_deliveries_pending", "delivered_at", "subscription_id", "id"),
    )
