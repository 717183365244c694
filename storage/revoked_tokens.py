"""Revoked bearer tokens (`revoked_tokens`): rows only; fhir_api.auth.revocation holds the rules."""

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from storage.tables.access import RevokedToken


def is_revoked(session: Session, jti: str) -> bool:
    """Whether the token with this jti was revoked (a primary-key lookup)."""
    return session.get(RevokedToken, jti) is not None


def revoke(
    session: Session, *, jti: str, subject: str, expires_at: datetime | None, now: datetime, by: str, reason: str
) -> RevokedToken:
    """Record a revocation (again: the first one stands), and forget revocations of expired tokens."""
    session.execute(delete(RevokedToken).where(RevokedToken.expires_at < now))
    row = session.get(RevokedToken, jti)
    if row is None:
        row = RevokedToken(
            jti=jti, subject=subject[:256], expires_at=expires_at, revoked_at=now, revoked_by=by[:256], reason=reason[:256]
        )
        session.add(row)
        session.flush()
    return row
