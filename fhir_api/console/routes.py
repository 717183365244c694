"""/console: the console's page and files, and /console/session: signing in and out.

POST /console/session checks a name and password (fhir_api/auth/users.py), opens a session and
sets its cookie: HttpOnly (scripts cannot read it), SameSite=Strict (no other site's page sends
it), Secure over HTTPS, Path=/ (the admin API reads it). Its answer carries the CSRF token the
console sends back on every change, and what the person's role may read and change (the admin
API's role table). Every sign-in, refusal, lock-out and sign-out is audited with the name given.
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.staticfiles import StaticFiles

from audit import log as audit_log
from audit.records import (
    LOGIN,
    LOGOUT,
    USER_LOCKED_OUT,
    USER_SIGN_IN_FAILED,
    USER_SIGNED_IN,
    USER_SIGNED_OUT,
    AuditRecord,
    Hop,
    Outcome,
)
from fhir_api.auth.roles import AREAS, may
from fhir_api.auth import sessions, users
from fhir_api.deps import EngineDep, SettingsDep, client_address
from fhir_api.errors import Forbidden, Unauthorized
from storage.db import session_scope

STATIC = Path(__file__).parent / "static"
# Correlation id of sign-in records, which belong to no study (as token records use "auth").
CONSOLE_CORRELATION = "auth"

router = APIRouter(include_in_schema=False)


def static_files() -> StaticFiles:
    """The console's scripts, styles and pictures, mounted at /console/static."""
    return StaticFiles(directory=STATIC)


@router.get("/console")
@router.get("/console/")
def page() -> FileResponse:
    """The console's one page; its scripts draw each view."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


class SignIn(BaseModel):
    """A name and password."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Me(BaseModel):
    """Who is signed in, the token their changes carry, and what their role may read and change."""

    name: str
    role: str
    csrf_token: str
    reads: list[str]
    changes: list[str]
    idle_timeout_seconds: int


def _me(signed_in: sessions.SignedIn, settings: SettingsDep) -> Me:
    roles = set(signed_in.principal.roles)
    return Me(
        name=signed_in.principal.subject,
        role=signed_in.principal.roles[0] if signed_in.principal.roles else "",
        csrf_token=signed_in.csrf_token,
        reads=[a for a in AREAS if may(roles, area=a, change=False)],
        changes=[a for a in AREAS if may(roles, area=a, change=True)],
        idle_timeout_seconds=settings.console_idle_timeout_seconds,
    )


def _record(hop: Hop, who: str, address: str, *, outcome: Outcome = Outcome.SUCCESS, **detail: str) -> AuditRecord:
    return AuditRecord(
        hop=hop,
        correlation_id=CONSOLE_CORRELATION,
        agent_who=who[:128],
        agent_address=address,
        entity_what="console",
        outcome=outcome,
        detail=dict(detail),
    )


def _same_origin(request: Request) -> None:
    # A sign-in from another site's page (login CSRF) carries that site's Origin (RFC 6454).
    origin = request.headers.get("origin")
    if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise Forbidden("sign in from the console's own page")


@router.post("/console/session")
def sign_in(body: SignIn, request: Request, response: Response, engine: EngineDep, settings: SettingsDep) -> Me:
    """Sign in: 200 with the session cookie, or 401 (the same for an unknown name, a wrong password and
    a locked account)."""
    _same_origin(request)
    address = client_address(request)
    now = datetime.now(UTC)
    lockout = users.LockOut(failures=settings.console_lockout_failures, seconds=settings.console_lockout_seconds)
    limits = sessions.Lifetime(
        idle=timedelta(seconds=settings.console_idle_timeout_seconds),
        lifetime=timedelta(seconds=settings.console_session_lifetime_seconds),
    )
    refused: users.SignInRefused | None = None
    with session_scope(engine) as session:
        try:
            user = users.authenticate(session, name=body.name, password=body.password, lockout=lockout, now=now)
        except users.SignInRefused as exc:
            # Committed with the failure count, then answered: the count must survive the refusal.
            refused = exc
            failure = Outcome.MINOR_FAILURE
            failed = _record(USER_SIGN_IN_FAILED, body.name, address, outcome=failure, event=LOGIN, reason=exc.reason)
            audit_log.append(session, failed)
            if exc.locked_now:
                audit_log.append(session, _record(USER_LOCKED_OUT, body.name, address, outcome=failure, event=LOGIN))
        else:
            session_id, signed_in = sessions.open_session(session, user, address=address, limits=limits, now=now)
            audit_log.append(session, _record(USER_SIGNED_IN, user.name, address, event=LOGIN, role=user.role))
    if refused is not None:
        raise Unauthorized(str(refused), token_given=False)
    response.set_cookie(
        sessions.COOKIE,
        session_id,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return _me(signed_in, settings)


def _signed_in(request: Request) -> sessions.SignedIn:
    # The gate (fhir_api/security.py) checked the cookie and left the session here; a bearer
    # token reaches this path too, but it is not a session.
    found: sessions.SignedIn | None = getattr(request.state, "signed_in", None)
    if found is None:
        raise Unauthorized("not signed in", token_given=False)
    return found


@router.get("/console/session")
def who_am_i(request: Request, settings: SettingsDep) -> Me:
    """The signed-in person (401 when the session has ended): the console asks on every load."""
    return _me(_signed_in(request), settings)


@router.delete("/console/session", status_code=204)
def sign_out(request: Request, engine: EngineDep) -> Response:
    """Sign out: the session ends and its cookie is cleared."""
    signed_in = _signed_in(request)
    with session_scope(engine) as session:
        sessions.close_session(session, signed_in)
        who, address = signed_in.principal.subject, client_address(request)
        audit_log.append(session, _record(USER_SIGNED_OUT, who, address, event=LOGOUT))
    response = Response(status_code=204)
    secure = request.url.scheme == "https"
    response.delete_cookie(sessions.COOKIE, path="/", httponly=True, samesite="strict", secure=secure)
    return response
