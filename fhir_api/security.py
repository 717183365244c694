"""HTTP security on by default: tokens on every non-public route, rate limits, body limits, security headers.

Pure ASGI middleware (encode/starlette `starlette/middleware/`), in this order from the outside:
security headers on every answer, CORS when origins are allowed (closed by default), the body
limit, then the gate, which rate-limits each client and refuses requests without a valid bearer
token before any route runs, so a route that forgot its dependency is still protected.
"""

import asyncio
import logging
import re
from datetime import UTC, datetime, timedelta
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from sqlalchemy import Engine
from starlette.exceptions import HTTPException

from audit import log as audit_log
from audit.records import AUTHENTICATION_FAILED, AuditRecord, Outcome
from fhir_api.auth import sessions
from fhir_api.auth.revocation import Revocations
from fhir_api.auth.tokens import Principal, verify_token
from fhir_api.config import ApiSettings
from fhir_api.errors import FhirError, Forbidden, PayloadTooLarge, Unauthorized, Unavailable
from fhir_api.ratelimit import RateLimiter
from fhir_api.responses import answers_problems, error_problem, error_response, refusal
from storage.db import read_scope, session_scope
from storage.errors import StorageError, StorageUnavailable

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Routes anyone may call (DESIGN.md section 8): probes, the capability and SMART discovery
# documents a client reads before it has a token, and the token endpoint, which authenticates
# clients itself. Everything else, /metrics and /openapi.json included, needs a bearer token.
PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/fhir/metadata",
        "/.well-known/smart-configuration",
        "/fhir/.well-known/smart-configuration",
        "/auth/token",
    }
)
# Issue 16, the console: its page and static files load before anyone signs in, and so does the
# sign-in itself (POST /console/session). The session cookie it sets is a credential on the admin
# API and on /console/session only; FHIR routes take bearer tokens alone.
CONSOLE_PREFIX = "/console"
CONSOLE_SESSION = "/console/session"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Probes come from the orchestrator often and cheaply; they are not rate-limited.
_UNLIMITED = frozenset({"/healthz", "/readyz"})
# Correlation id of authentication records, which belong to no study.
AUTH_CORRELATION = "auth"
# The admin API answers errors as RFC 9457 problem details, not FHIR OperationOutcomes.
ADMIN_PREFIX = "/admin"


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _public(method: str, path: str) -> bool:
    if path in PUBLIC_PATHS or (method == "POST" and path == CONSOLE_SESSION):
        return True
    # The console's page and files (fhir_api/console/): no data, only code.
    return _under(path, CONSOLE_PREFIX) and path != CONSOLE_SESSION


def _takes_session(path: str) -> bool:
    return _under(path, ADMIN_PREFIX) or path == CONSOLE_SESSION


def _cookie(scope: Scope, name: str) -> str:
    for part in _header(scope, b"cookie").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def audit_failed_authentication(engine: Engine, *, address: str, reason: str, path: str) -> None:
    """Record a refused token or client authentication (issue 8: failed authentication is audited)."""
    with session_scope(engine) as session:
        audit_log.append(
            session,
            AuditRecord(
                hop=AUTHENTICATION_FAILED,
                correlation_id=AUTH_CORRELATION,
                agent_who="anonymous",
                agent_address=address,
                entity_what=path[:256],
                outcome=Outcome.MINOR_FAILURE,
                detail={"reason": reason[:200]},
            ),
        )


class Gate:
    """Rate-limits each client, then lets only requests with a valid bearer token past, except public paths.

    A presented but invalid or expired token is audited; a request with no credentials at all
    is not an authentication attempt and only gets its 401.
    """

    def __init__(self, app: ASGIApp, settings: ApiSettings, revocations: Revocations) -> None:
        self.app = app
        self.settings = settings
        self.revocations = revocations
        self.limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        public = _public(method, path)
        scheme, _, token = _header(scope, b"authorization").partition(" ")
        session_id = _cookie(scope, sessions.COOKIE) if _takes_session(path) else ""
        failure: FhirError | None = None
        client = f"address:{_address(scope)}"
        if scheme.lower() == "bearer" and token:
            try:
                principal = verify_token(self.settings, token.strip())
                client = f"subject:{principal.subject}"
                failure = await self._revoked(scope, principal)
            except Unauthorized as exc:
                failure = exc
        elif session_id:
            failure = await self._session(scope, session_id, method)
        elif not public:
            failure = Unauthorized("a bearer token is required", token_given=False)
        if path not in _UNLIMITED:
            wait = self.limiter.wait(client)
            if wait:
                # RFC 6585 section 4: 429 with Retry-After.
                retry = {"Retry-After": str(wait)}
                await refusal(path, 429, "throttled", "too many requests; slow down", headers=retry)(scope, receive, send)
                return
        if failure is not None and not public:
            if isinstance(failure, Unauthorized) and failure.token_given and not session_id:
                await self._audit(scope, str(failure))
            answer = error_problem(failure) if answers_problems(path) else error_response(failure)
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _revoked(self, scope: Scope, principal: Principal) -> FhirError | None:
        """Unauthorized for a revoked token (issue 18); Unavailable when the database cannot say."""
        engine: Engine | None = getattr(scope["app"].state, "engine", None)
        if engine is None:
            return None  # an application without its lifespan (uvicorn serves only after it ran)
        revoked = self.revocations.remembered(principal.token_id)
        try:
            if revoked is None:  # a thread only for a lookup, not for what is remembered
                revoked = await asyncio.to_thread(self.revocations.revoked, engine, principal.token_id)
        except StorageUnavailable:
            return Unavailable("storage is unavailable, retry later")
        return Unauthorized("the access token has been revoked") if revoked else None

    async def _session(self, scope: Scope, session_id: str, method: str) -> FhirError | None:
        """Check a console session cookie (and, on a change, its CSRF header); on success the route
        finds the person in scope["state"]["principal"]."""
        engine: Engine | None = getattr(scope["app"].state, "engine", None)
        if engine is None:
            return Unauthorized("sign in again", token_given=False)
        limits = sessions.Lifetime(
            idle=timedelta(seconds=self.settings.console_idle_timeout_seconds),
            lifetime=timedelta(seconds=self.settings.console_session_lifetime_seconds),
        )
        try:
            signed_in = await asyncio.to_thread(_resume, engine, session_id, limits)
        except StorageUnavailable:
            return Unavailable("storage is unavailable, retry later")
        if signed_in is None:
            # Not audited: an ended session is the idle time-out doing its work.
            return Unauthorized("the session has ended; sign in again", token_given=False)
        if method not in _SAFE_METHODS and not sessions.csrf_matches(
            signed_in, _header(scope, sessions.CSRF_HEADER.encode())
        ):
            return Forbidden("a change needs the session's CSRF token in the X-CSRF-Token header")
        scope.setdefault("state", {})["principal"] = signed_in.principal
        scope["state"]["signed_in"] = signed_in
        return None

    async def _audit(self, scope: Scope, reason: str) -> None:
        engine: Engine | None = getattr(scope["app"].state, "engine", None)
        if engine is None:
            return
        try:
            await asyncio.to_thread(
                audit_failed_authentication, engine, address=_address(scope), reason=reason, path=scope["path"]
            )
        except StorageError as exc:
            # The 401 stands either way; the database being down is reported by /readyz.
            log.warning("could not audit a failed authentication: %s", type(exc).__name__)


def _resume(engine: Engine, session_id: str, limits: sessions.Lifetime) -> sessions.SignedIn | None:
    """The session of a cookie, read without a write; its use is written back now and then."""
    now = datetime.now(UTC)
    with read_scope(engine) as session:
        signed_in = sessions.resume(session, session_id, limits=limits, now=now)
    if signed_in is not None and sessions.needs_touch(signed_in, now=now):
        with session_scope(engine) as session:
            sessions.touch(session, signed_in, now=now)
    return signed_in


class BodyLimit:
    """Refuses request bodies over the limit with 413: by Content-Length at once, or while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(self._too_large())(scope, receive, send)
            return
        seen, started = 0, False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._too_large()
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except* PayloadTooLarge as group:
            # Raised inside the route's body read, before any answer was started; middleware
            # running the app in a task group (starlette's BaseHTTPMiddleware) wraps it in a group.
            if started:
                raise
            await error_response(group.exceptions[0])(scope, receive, send)  # type: ignore[arg-type]

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body exceeds the limit of {self.max_bytes} bytes")


class NulRefused(HTTPException):
    """Text with U+0000 in it: no FHIR, HL7 or admin value holds one, and PostgreSQL text cannot.

    An HTTPException, so FastAPI's body parsing lets it through to the API's handlers (any other
    exception there becomes a vague "error parsing the body").
    """

    def __init__(self, where: str) -> None:
        super().__init__(400, f"the request's {where} holds a NUL character (U+0000)")


# In JSON a NUL inside a string can only be the escape \u0000 (RFC 8259 section 7: control
# characters must be escaped), unless its backslash is itself escaped.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_TEXT_BODIES = ("application/json", "application/fhir+json", "application/json-patch+json", "application/x-www-form-urlencoded")
_CARRY = 64  # bytes of one body piece kept to find an escape split between two pieces


class NoNul:
    """Refuses a NUL (U+0000) with 400: in the path or the query before any route, in a JSON or form
    body as the route reads it (NulRefused, answered by the app's handlers).

    PostgreSQL's text types cannot hold U+0000 (its documentation, "Character Types"), so such a
    value would otherwise fail deep in a search or a write as a database error; no FHIR string
    (FHIR R4 datatypes, string) or admin field has a use for it. DICOM and other binary bodies
    are not text and pass.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query: bytes = scope.get("query_string", b"")
        if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
            detail = str(NulRefused("path or query").detail)
            await refusal(scope["path"], 400, "invalid", detail)(scope, receive, send)
            return
        media = _header(scope, b"content-type").split(";", 1)[0].strip().lower()
        if media not in _TEXT_BODIES:
            await self.app(scope, receive, send)
            return
        form = media == "application/x-www-form-urlencoded"
        tail = b""

        async def scanned() -> Message:
            # Raised inside a route's body read: the app's handlers answer it (NoNul runs innermost).
            nonlocal tail
            message = await receive()
            if message["type"] == "http.request":
                piece = tail + message.get("body", b"")
                if b"\x00" in piece or (b"%00" in piece if form else _JSON_NUL.search(piece) is not None):
                    raise NulRefused("body")
                tail = piece[-_CARRY:]
            return message

        await self.app(scope, scanned, send)


# Content-Security-Policy (CSP Level 3): answers are data, never pages; the console's page may load
# only its own files and call only its own origin, with no inline script or style.
API_POLICY = b"default-src 'none'; frame-ancestors 'none'"
CONSOLE_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


class SecurityHeaders:
    """Headers every answer carries: no sniffing, no framing, no referrer, no caching of PHI, and HSTS over TLS."""

    def __init__(self, app: ASGIApp, hsts_max_age: int) -> None:
        self.app = app
        self.hsts = f"max-age={hsts_max_age}; includeSubDomains".encode() if hsts_max_age > 0 else b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secure = scope.get("scheme") == "https"
        # The console's page runs its own scripts and styles and calls this origin; nothing else does.
        policy = CONSOLE_POLICY if _under(scope["path"], CONSOLE_PREFIX) else API_POLICY

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {bytes(k).lower() for k, _ in headers}
                wanted = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", policy),
                    (b"referrer-policy", b"no-referrer"),
                    # Answers carry PHI; no cache may keep them (RFC 9111 section 5.2.2.5).
                    (b"cache-control", b"no-store"),
                ]
                if secure and self.hsts:
                    wanted.append((b"strict-transport-security", self.hsts))
                headers += [(k, v) for k, v in wanted if k not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
