"""Walking the audit chain: names the first record that was changed, removed or reordered."""

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from audit.log import GENESIS, record_hash
from storage.tables.audit import AuditEvent


@dataclass(frozen=True)
class ChainBreak:
    """Where the chain stops holding, and why."""

    record_id: int
    reason: str


@dataclass(frozen=True)
class Verification:
    """The outcome of one walk over the chain."""

    records: int
    first_break: ChainBreak | None

    @property
    def intact(self) -> bool:
        """True when every record links to its predecessor and matches its own hash."""
        return self.first_break is None


def verify(session: Session, *, batch: int = 5000) -> Verification:
    """Check every record in id order.

    A changed field breaks the record's own hash; a removed record or two swapped records
    break the link (prev_hash) of the record after the gap. Removing the newest records leaves a
    shorter valid chain: compare the count or last hash with an external copy (the syslog export).
    """
    expected_prev = GENESIS
    count = 0
    last_id = 0
    while True:
        rows = list(
            session.scalars(select(AuditEvent).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(batch))
        )
        if not rows:
            return Verification(records=count, first_break=None)
        for row in rows:
            count += 1
            if row.prev_hash != expected_prev:
                return Verification(
                    records=count,
                    first_break=ChainBreak(row.id, "does not link to the record before it: a record was removed or reordered"),
                )
            if record_hash(row) != row.hash:
                return Verification(
                    records=count, first_break=ChainBreak(row.id, "content does not match its hash: the record was changed")
                )
            expected_prev = row.hash
            last_id = row.id
