"""The people who sign in to the console and their sessions (`users`, `console_sessions`): rows only.

The rules over them (password hashing, lock-out, session lifetimes) are fhir_api.auth.users' and
fhir_api.auth.sessions'.
"""

from datetime import datetime

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from storage.paging import Columns
from storage.tables.access import ConsoleSession, User


class UserExists(ValueError):
    """A person with this name has an account already."""


# The columns a list of people may be sorted on.
USER_SORTS: Columns = {
    "name": User.name,
    "role": User.role,
    "created": User.created_at,
    "last_sign_in": User.last_sign_in_at,
}


def user_query(*, role: str | None = None) -> Select[User]:
    """Every account (of one role)."""
    stmt = select(User)
    return stmt if role is None else stmt.where(User.role == role)


def get_user(session: Session, *, name: str) -> User | None:
    """One account, or None."""
    return session.get(User, name)


def add_user(session: Session, *, name: str, role: str, password_hash: str, now: datetime) -> User:
    """Create an account (UserExists when the name is taken)."""
    if session.get(User, name) is not None:
        raise UserExists(f"a user {name} exists already")
    row = User(
        name=name,
        role=role,
        password_hash=password_hash,
        failed_attempts=0,
        locked_until=None,
        disabled=False,
        created_at=now,
        last_sign_in_at=None,
    )
    session.add(row)
    session.flush()
    return row


def remove_user(session: Session, *, name: str) -> bool:
    """Remove an account and its sessions; False when there was none."""
    row = session.get(User, name)
    if row is None:
        return False
    end_sessions(session, user_name=name)
    session.delete(row)
    session.flush()
    return True


def add_session(
    session: Session, *, id_hash: str, user_name: str, csrf_token: str, address: str, now: datetime
) -> ConsoleSession:
    """Record a new session (the caller made its id and CSRF token)."""
    row = ConsoleSession(
        id_hash=id_hash,
        user_name=user_name,
        csrf_token=csrf_token,
        address=address[:64],
        created_at=now,
        last_seen_at=now,
    )
    session.add(row)
    session.flush()
    return row


def get_session(session: Session, *, id_hash: str) -> ConsoleSession | None:
    """One session by the hash of its id, or None."""
    return session.get(ConsoleSession, id_hash)


def end_session(session: Session, *, id_hash: str) -> None:
    """Forget one session."""
    session.execute(delete(ConsoleSession).where(ConsoleSession.id_hash == id_hash))


def end_sessions(session: Session, *, user_name: str) -> None:
    """Forget every session of one person (their role or password changed, or they were removed)."""
    session.execute(delete(ConsoleSession).where(ConsoleSession.user_name == user_name))


def prune_sessions(session: Session, *, seen_before: datetime, created_before: datetime) -> None:
    """Forget sessions idle since `seen_before` or older than `created_before`: they can no longer be used."""
    stale = (ConsoleSession.last_seen_at < seen_before) | (ConsoleSession.created_at < created_before)
    session.execute(delete(ConsoleSession).where(stale))
