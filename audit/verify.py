"""Walking the audit chain: names the first record that was changed, removed or reordered."""

import hmac
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from audit.log import GENESIS, record_hash, seal
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


def verify(session: Session, *, key: str = "", batch: int = 5000) -> Verification:
    """Check every record in id order.

    A changed field breaks the record's own hash; a removed record or two swapped records
    break the link (prev_hash) of the record after the gap. Removing the newest records leaves a
    shorter valid chain: compare the count or last hash with an external copy (the syslog export).

    With the audit `key` (DOCTORAI_AUDIT_KEY), the seals are checked too: a sealed record's seal
    must be the HMAC of its hash, every record after a sealed one must be sealed, and so must
    the newest. A chain rewritten with recomputed plain hashes by someone without the key fails.
    """
    expected_prev = GENESIS
    count = 0
    last_id = 0
    sealed_since: int | None = None
    while True:
        rows = list(
            session.scalars(select(AuditEvent).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(batch))
        )
        if not rows:
            if key and count and sealed_since is None:
                return Verification(
                    records=count,
                    first_break=ChainBreak(last_id, "the newest record is not sealed with the audit key: seals were removed"),
                )
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
            if key:
                broken = _seal_break(row, key, sealed_before=sealed_since is not None)
                if broken is not None:
                    return Verification(records=count, first_break=broken)
                if row.seal and sealed_since is None:
                    sealed_since = row.id
            expected_prev = row.hash
            last_id = row.id


def _seal_break(row: AuditEvent, key: str, *, sealed_before: bool) -> ChainBreak | None:
    if row.seal:
        if not hmac.compare_digest(row.seal, seal(key, row.hash)):
            return ChainBreak(row.id, "its seal does not match the audit key: the chain was rewritten without the key")
        return None
    if sealed_before:
        return ChainBreak(row.id, "not sealed although records before it are: written without the key, or its seal removed")
    return None
