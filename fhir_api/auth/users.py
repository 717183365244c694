"""People who sign in to the console: roles, password hashes, and the lock-out after repeated failures.

Passwords are stored as Argon2id hashes (RFC 9106, its second recommended parameter set: 64 MiB,
3 passes, 4 lanes; argon2-cffi's defaults), salted per password; the parameters travel in the hash,
so stronger ones apply to each password at its owner's next sign-in. After `failures` wrong
passwords in a row an account is locked for a while (NIST SP 800-63B 5.2.2, rate limiting);
every refusal answers the same, so a caller cannot tell an unknown name from a wrong password or
a locked account, and an unknown name costs as long as a known one.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.orm import Session

from fhir_api.auth.tokens import ADMIN, AUDITOR, OPERATOR
from storage.tables.access import User
from storage.users import add_user, end_sessions, get_user

# The roles a person can have: the admin API's (fhir_api/admin/access.py).
ROLES = (ADMIN, OPERATOR, AUDITOR)
_HASHER = PasswordHasher()
# Verified when the name is unknown, so that a refusal takes as long either way.
_DUMMY_HASH = _HASHER.hash("doctorai-no-such-user")


class SignInRefused(Exception):
    """Wrong name or password, or a locked or disabled account; `reason` is for the audit trail only."""

    def __init__(self, reason: str, *, locked_now: bool = False) -> None:
        super().__init__("wrong name or password, or the account is locked")
        self.reason = reason
        self.locked_now = locked_now


@dataclass(frozen=True)
class LockOut:
    """How many wrong passwords in a row lock an account, and for how long."""

    failures: int
    seconds: float


def hash_password(password: str) -> str:
    """An Argon2id hash of a password, with its salt and parameters, as stored."""
    return _HASHER.hash(password)


def check_password(password: str, *, min_length: int) -> None:
    """ValueError unless a new password is long enough (NIST SP 800-63B 5.1.1.2: length over rules)."""
    if len(password) < min_length:
        raise ValueError(f"a password has at least {min_length} characters")
    if len(password) > 1024:
        raise ValueError("a password has at most 1024 characters")


def create_user(session: Session, *, name: str, role: str, password: str, min_length: int) -> User:
    """A new account (UserExists when the name is taken, ValueError for a bad role or password)."""
    if role not in ROLES:
        raise ValueError(f"the role is one of {', '.join(ROLES)}")
    check_password(password, min_length=min_length)
    return add_user(session, name=name, role=role, password_hash=hash_password(password), now=datetime.now(UTC))


def _matches(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def authenticate(session: Session, *, name: str, password: str, lockout: LockOut, now: datetime) -> User:
    """The account whose password this is, its failures reset; SignInRefused otherwise (failures counted)."""
    user = get_user(session, name=name)
    if user is None:
        _matches(_DUMMY_HASH, password)
        raise SignInRefused("unknown user")
    if user.disabled:
        _matches(_DUMMY_HASH, password)
        raise SignInRefused("account disabled")
    if user.locked_until is not None and user.locked_until > now:
        _matches(_DUMMY_HASH, password)
        raise SignInRefused("account locked")
    if not _matches(user.password_hash, password):
        user.failed_attempts += 1
        if user.failed_attempts >= lockout.failures:
            user.failed_attempts = 0
            user.locked_until = now + timedelta(seconds=lockout.seconds)
            raise SignInRefused("wrong password", locked_now=True)
        raise SignInRefused("wrong password")
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.failed_attempts = 0
    user.locked_until = None
    user.last_sign_in_at = now
    return user


def set_password(session: Session, user: User, *, password: str, min_length: int) -> None:
    """Give an account a new password; its sessions end."""
    check_password(password, min_length=min_length)
    user.password_hash = hash_password(password)
    end_sessions(session, user_name=user.name)


def set_role(session: Session, user: User, *, role: str) -> None:
    """Give an account another role; its sessions end, so the new role applies at once."""
    if role not in ROLES:
        raise ValueError(f"the role is one of {', '.join(ROLES)}")
    user.role = role
    end_sessions(session, user_name=user.name)


def unlock(user: User) -> None:
    """Lift a lock-out and forget the failures."""
    user.locked_until = None
    user.failed_attempts = 0


def set_disabled(session: Session, user: User, *, disabled: bool) -> None:
    """Refuse (or allow again) an account's sign-ins; disabling ends its sessions."""
    user.disabled = disabled
    if disabled:
        end_sessions(session, user_name=user.name)
