"""Console sessions: a random id in an HttpOnly cookie, its SHA-256 in the database, and a CSRF token.

The id is 256 random bits; the table keeps only its hash, so a copy of the database opens no
session. A session ends after `idle` seconds without a request and `lifetime` seconds after it
began, whichever comes first (OWASP Session Management: idle and absolute time-outs). Every
change a session makes carries its CSRF token in the X-CSRF-Token header, checked against the
row: a cross-site form cannot read it (synchronizer token; the cookie is SameSite=Strict too).
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from fhir_api.auth.tokens import Principal
from storage.tables.access import User
from storage.users import add_session, end_session, get_session, get_user, prune_sessions

COOKIE = "doctorai_session"
CSRF_HEADER = "x-csrf-token"
# A use is written back at most this often: reading a page is not a database write each time,
# and an idle time-out of minutes does not need a finer clock.
TOUCH_EVERY = timedelta(seconds=30)


@dataclass(frozen=True)
class Lifetime:
    """How long a session lives: without a request, and in all."""

    idle: timedelta
    lifetime: timedelta


@dataclass(frozen=True)
class SignedIn:
    """A session that is still valid: who it is, and the CSRF token its changes must carry."""

    principal: Principal
    csrf_token: str
    id_hash: str
    last_seen_at: datetime


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def principal_of(user: User) -> Principal:
    """The principal a person acts as: their name, their one role, no FHIR scopes."""
    return Principal(subject=user.name, scopes=(), roles=(user.role,))


def open_session(
    session: Session, user: User, *, address: str, limits: Lifetime, now: datetime
) -> tuple[str, SignedIn]:
    """A new session for `user` (ended ones are forgotten): the id for the cookie (never stored), and
    what it signs in as."""
    prune_sessions(session, seen_before=now - limits.idle, created_before=now - limits.lifetime)
    session_id = secrets.token_urlsafe(32)
    csrf_token = secrets.token_urlsafe(32)
    row = add_session(
        session, id_hash=_hash(session_id), user_name=user.name, csrf_token=csrf_token, address=address, now=now
    )
    return session_id, SignedIn(principal_of(user), row.csrf_token, row.id_hash, now)


def resume(session: Session, session_id: str, *, limits: Lifetime, now: datetime) -> SignedIn | None:
    """The valid session of this cookie value, None when unknown, ended, or its person disabled; reads only."""
    row = get_session(session, id_hash=_hash(session_id))
    if row is None or now - row.last_seen_at > limits.idle or now - row.created_at > limits.lifetime:
        return None
    user = get_user(session, name=row.user_name)
    if user is None or user.disabled:
        return None
    return SignedIn(principal_of(user), row.csrf_token, row.id_hash, row.last_seen_at)


def touch(session: Session, signed_in: SignedIn, *, now: datetime) -> None:
    """Record a use of the session, which restarts its idle time-out."""
    row = get_session(session, id_hash=signed_in.id_hash)
    if row is not None:
        row.last_seen_at = now


def needs_touch(signed_in: SignedIn, *, now: datetime) -> bool:
    """Whether this use should be written back (the last one recorded is older than TOUCH_EVERY)."""
    return now - signed_in.last_seen_at >= TOUCH_EVERY


def close_session(session: Session, signed_in: SignedIn) -> None:
    """Sign out: the session's id opens nothing any more."""
    end_session(session, id_hash=signed_in.id_hash)


def csrf_matches(signed_in: SignedIn, presented: str) -> bool:
    """Whether a request carries its session's CSRF token (compared in constant time)."""
    return bool(presented) and hmac.compare_digest(signed_in.csrf_token.encode(), presented.encode())
