"""Revoking bearer tokens before they expire (issue 18): by jti, or by the token itself.

A revoked token is refused by the gate (fhir_api/security.py) on every request. The check is one
primary-key lookup in `revoked_tokens`, remembered per jti for `token_revocation_cache_seconds`,
so a busy client costs a lookup per interval; a revocation made through this process takes
effect at once, one made elsewhere (another replica, the CLI) within that interval.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from fhir_api.auth.tokens import ALGORITHM
from fhir_api.config import ApiSettings
from fhir_api.errors import Unprocessable
from storage import revoked_tokens
from storage.db import read_scope
from storage.tables.access import RevokedToken

# A jti is what `issue_token` writes (a UUID) or what a foreign issuer of ours might: printable, bounded.
JTI_MAX_LENGTH = 128
# The most jtis remembered; past it the memory starts again (each is looked up once more).
_MAX_REMEMBERED = 10_000


@dataclass(frozen=True)
class Target:
    """The token a revocation names: its jti, and its subject and expiry when the token itself was given."""

    jti: str
    subject: str = ""
    expires_at: datetime | None = None


def target(settings: ApiSettings, *, jti: str = "", token: str = "") -> Target:
    """What to revoke, from a jti or a token of this engine (signature checked, expiry not: an
    expired token may be revoked, to no effect); Unprocessable for anything else."""
    if bool(jti) == bool(token):
        raise Unprocessable("give either the jti or the token to revoke")
    if jti:
        return Target(jti=_checked(jti))
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            issuer=settings.jwt_issuer,
            options={"verify_exp": False, "require": ["jti", "sub", "exp"]},
        )
    except jwt.InvalidTokenError as exc:
        raise Unprocessable(f"token: not a token of this engine ({exc})") from None
    try:
        expires = datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise Unprocessable("token: its exp claim is not a time") from None
    return Target(jti=_checked(str(claims["jti"])), subject=str(claims["sub"]), expires_at=expires)


def _checked(jti: str) -> str:
    if len(jti) > JTI_MAX_LENGTH or not jti.isprintable() or jti.strip() != jti:
        raise Unprocessable(f"jti must be 1 to {JTI_MAX_LENGTH} printable characters")
    return jti


def revoke(session: Session, what: Target, *, by: str, reason: str = "") -> RevokedToken:
    """Record the revocation (the caller audits it in the same transaction)."""
    return revoked_tokens.revoke(
        session, jti=what.jti, subject=what.subject, expires_at=what.expires_at, now=datetime.now(UTC), by=by, reason=reason
    )


def document(row: RevokedToken) -> dict[str, object]:
    """A revocation as the admin API answers it and the audit trail records it."""
    return {
        "jti": row.jti,
        "subject": row.subject,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "revoked_by": row.revoked_by,
        "reason": row.reason,
    }


class Revocations:
    """Which token ids are revoked, as the database says, remembered for a short time per id."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # jti -> (revoked, when looked up); a revocation is never undone, so a True stays true.
        self._known: dict[str, tuple[bool, float]] = {}

    def remembered(self, jti: str) -> bool | None:
        """Whether the token is revoked, as remembered (no I/O: fine on the event loop); None when
        it must be looked up."""
        with self._lock:
            known = self._known.get(jti)
        if known is not None and (known[0] or self._clock() - known[1] < self._ttl):
            return known[0]
        return None

    def revoked(self, engine: Engine, jti: str) -> bool:
        """Whether the token with this jti is revoked (blocking: call it off the event loop)."""
        remembered = self.remembered(jti)
        if remembered is not None:
            return remembered
        now = self._clock()
        with read_scope(engine) as session:
            answer = revoked_tokens.is_revoked(session, jti)
        self._remember(jti, answer, now)
        return answer

    def mark(self, jti: str) -> None:
        """This process revoked `jti`: refuse it from now on, without waiting for the interval."""
        self._remember(jti, True, self._clock())

    def _remember(self, jti: str, revoked: bool, now: float) -> None:
        with self._lock:
            if len(self._known) >= _MAX_REMEMBERED:
                self._known.clear()
            self._known[jti] = (revoked, now)
