"""/admin/users: the people who sign in to the console (admin only, reads included).

Passwords are set here or with `doctorai users`, and stored only as hashes (fhir_api/auth/users.py).
A change of role, password or the disabled flag ends the person's sessions, so it applies at once.
Nobody changes their own role, disables or removes themselves here: an admin cannot lock the
console's last door by mistake. Every change is audited as DCM 110137 User Security Attributes Changed.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from audit.records import ADMIN_SECURITY, USER_SECURITY_ATTRIBUTES_CHANGED
from fhir_api.admin.access import Actor, ActorDep, audit_change
from fhir_api.admin.paging import Page, Paging, sorted_by
from fhir_api.auth import users
from fhir_api.deps import EngineDep, SettingsDep
from fhir_api.errors import InvalidState, NotFound, Unprocessable
from storage.db import read_scope, session_scope
from storage.paging import Order
from storage.tables.access import User
from storage.users import USER_SORTS, UserExists, get_user, remove_user, user_query

router = APIRouter(prefix="/users", tags=["users"])
_ALERT = {"alert_type": USER_SECURITY_ATTRIBUTES_CHANGED}
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")]
Role = Literal["admin", "operator", "auditor"]


class UserOut(BaseModel):
    """A person's account; never their password hash."""

    name: str
    role: str
    disabled: bool
    locked_until: datetime | None
    failed_attempts: int
    created_at: datetime
    last_sign_in_at: datetime | None


class UserIn(BaseModel):
    """A new account."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    role: Role
    password: str = Field(min_length=1, max_length=1024)


class UserChange(BaseModel):
    """A new role, or the account disabled or enabled."""

    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    disabled: bool | None = None


class PasswordIn(BaseModel):
    """A new password."""

    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=1, max_length=1024)


def _document(row: User) -> dict[str, Any]:
    return UserOut.model_validate(row, from_attributes=True).model_dump(mode="json")


def _found(session: Session, name: str) -> User:
    row = get_user(session, name=name)
    if row is None:
        raise NotFound(f"no user {name}")
    return row


def _audit(session: Session, actor: Actor, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    audit_change(session, actor, hop=ADMIN_SECURITY, before=before, after=after, detail=_ALERT)


def _not_self(actor: Actor, name: str, what: str) -> None:
    if actor.subject == name:
        raise InvalidState(f"you cannot {what} your own account; ask another admin")


@router.get("")
def list_users(
    engine: EngineDep,
    paging: Annotated[Paging, Depends(sorted_by(USER_SORTS, (Order("name"),)))],
    role: Role | None = None,
) -> Page[UserOut]:
    """The accounts (of one role), by name unless sorted otherwise."""
    with read_scope(engine) as session:
        rows, total = paging.rows(session, user_query(role=role), USER_SORTS, [User.name])
        return paging.of([UserOut.model_validate(r, from_attributes=True) for r in rows], total)


@router.post("", status_code=201)
def create_user(body: UserIn, engine: EngineDep, settings: SettingsDep, actor: ActorDep) -> UserOut:
    """Open an account (409 when the name is taken, 422 for a password that is too short)."""
    with session_scope(engine) as session:
        try:
            row = users.create_user(
                session,
                name=body.name,
                role=body.role,
                password=body.password,
                min_length=settings.console_password_min_length,
            )
        except UserExists as exc:
            raise InvalidState(str(exc)) from None
        except ValueError as exc:
            raise Unprocessable(str(exc)) from None
        after = _document(row)
        _audit(session, actor, None, after)
    return UserOut.model_validate(after)


@router.put("/{name}")
def change_user(name: str, body: UserChange, engine: EngineDep, actor: ActorDep) -> UserOut:
    """Give an account another role, or disable or enable it; its sessions end."""
    _not_self(actor, name, "change the role of or disable")
    with session_scope(engine) as session:
        row = _found(session, name)
        before = _document(row)
        if body.role is not None:
            users.set_role(session, row, role=body.role)
        if body.disabled is not None:
            users.set_disabled(session, row, disabled=body.disabled)
        after = _document(row)
        _audit(session, actor, before, after)
    return UserOut.model_validate(after)


@router.post("/{name}/unlock")
def unlock_user(name: str, engine: EngineDep, actor: ActorDep) -> UserOut:
    """Lift a lock-out after too many wrong passwords."""
    with session_scope(engine) as session:
        row = _found(session, name)
        before = _document(row)
        users.unlock(row)
        after = _document(row)
        _audit(session, actor, before, after)
    return UserOut.model_validate(after)


@router.post("/{name}/password")
def set_password(name: str, body: PasswordIn, engine: EngineDep, settings: SettingsDep, actor: ActorDep) -> UserOut:
    """Give an account a new password (422 when it is too short); its sessions end."""
    with session_scope(engine) as session:
        row = _found(session, name)
        try:
            users.set_password(session, row, password=body.password, min_length=settings.console_password_min_length)
        except ValueError as exc:
            raise Unprocessable(str(exc)) from None
        after = _document(row)
        _audit(session, actor, after, {**after, "password": "changed"})
    return UserOut.model_validate(after)


@router.delete("/{name}", status_code=204)
def delete_user(name: str, engine: EngineDep, actor: ActorDep) -> Response:
    """Remove an account and end its sessions; its audit records keep its name."""
    _not_self(actor, name, "remove")
    with session_scope(engine) as session:
        before = _document(_found(session, name))
        remove_user(session, name=name)
        _audit(session, actor, before, None)
    return Response(status_code=204)
