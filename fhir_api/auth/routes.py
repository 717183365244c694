"""OAuth2 token endpoint for SMART Backend Services, and the SMART configuration that describes it.

http://hl7.org/fhir/smart-app-launch/backend-services.html: `POST /auth/token` with
grant_type=client_credentials, authenticated by a JWT client assertion (private_key_jwt) or
HTTP Basic (client_secret_basic); errors are RFC 6749 section 5.2 JSON.
"""

import base64
import binascii
from typing import Any
from urllib.parse import parse_qsl, unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from audit import log as audit_log
from audit.records import TOKEN_ISSUED, AuditRecord
from fhir_api.auth import clients
from fhir_api.auth.tokens import issue_token
from fhir_api.deps import BodyDep, EngineDep, SettingsDep, client_address
from fhir_api.errors import TokenRequestError
from fhir_api.security import AUTH_CORRELATION, audit_failed_authentication
from storage.db import session_scope

router = APIRouter(tags=["auth"])
# RFC 6749 section 5.1: token responses must not be cached.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
SCOPES_SUPPORTED = ["system/*.cruds", "system/*.rs", "system/DiagnosticReport.rs", "system/Patient.rs"]


def token_url(request: Request, settings: SettingsDep) -> str:
    """The token endpoint's URL, which client assertions name as their audience.

    Never from the request's Host header (issue 18), which the client chooses: the configured
    public URL (required in production, fhir_api/config.py), else the address the connection
    reached, as the socket says.
    """
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/") + "/auth/token"
    host, port = request.scope.get("server") or (settings.http_host, settings.http_port)
    host = f"[{host}]" if ":" in str(host) else str(host)
    return f"{request.scope.get('scheme', 'http')}://{host}:{port}/auth/token"


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, sep, secret = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise TokenRequestError("invalid_client", "malformed Basic credentials") from None
    if not sep:
        raise TokenRequestError("invalid_client", "malformed Basic credentials")
    # RFC 6749 section 2.3.1: both parts are form-urlencoded before joining.
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


def _token_response(request: Request, body: bytes, engine: EngineDep, settings: SettingsDep) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise TokenRequestError("invalid_request", "send the token request as application/x-www-form-urlencoded")
    form = dict(parse_qsl(body.decode(), keep_blank_values=True))
    if form.get("grant_type") != "client_credentials":
        raise TokenRequestError("unsupported_grant_type", "only grant_type=client_credentials is supported")
    basic = _basic(request.headers.get("authorization", ""))
    assertion = form.get("client_assertion", "")
    try:
        with session_scope(engine) as session:
            if basic is not None:
                client = clients.by_secret(session, *basic)
            elif assertion and form.get("client_assertion_type") == clients.ASSERTION_TYPE:
                client = clients.by_assertion(session, assertion, token_url=token_url(request, settings))
            else:
                raise TokenRequestError("invalid_client", "authenticate with a client assertion or HTTP Basic")
            scopes = clients.grant(client, form.get("scope", "").split())
            client_id = client.client_id
            # Token issue is an audited hop (issue 8), committed with the assertion's jti.
            audit_log.append(
                session,
                AuditRecord(
                    hop=TOKEN_ISSUED,
                    correlation_id=AUTH_CORRELATION,
                    agent_who=client_id,
                    agent_address=client_address(request),
                    entity_what="/auth/token",
                    detail={"scope": " ".join(scopes)[:1000]},
                ),
            )
    except IntegrityError:
        # Two requests with one assertion at once: the second insert of its jti failed.
        raise TokenRequestError("invalid_client", "client assertion already used (jti replay)") from None
    ttl = settings.client_token_ttl_seconds
    return {
        "access_token": issue_token(settings, subject=client_id, scopes=scopes, roles=[], ttl_seconds=ttl),
        "token_type": "bearer",
        "expires_in": ttl,
        "scope": " ".join(scopes),
    }


@router.post("/auth/token")
def token(request: Request, body: BodyDep, engine: EngineDep, settings: SettingsDep) -> JSONResponse:
    """Issue a short-lived access token to an authenticated back-end client."""
    try:
        answer = _token_response(request, body, engine, settings)
    except TokenRequestError as exc:
        if exc.error == "invalid_client":
            audit_failed_authentication(
                engine, address=client_address(request), reason=f"{exc.error}: {exc}", path="/auth/token"
            )
        headers = dict(_NO_STORE)
        if exc.status_code == 401:
            headers["WWW-Authenticate"] = 'Basic realm="doctorai"'
        return JSONResponse(
            {"error": exc.error, "error_description": str(exc)}, status_code=exc.status_code, headers=headers
        )
    return JSONResponse(answer, headers=_NO_STORE)


def _configuration(request: Request, settings: SettingsDep) -> dict[str, Any]:
    return {
        "issuer": settings.jwt_issuer,
        "token_endpoint": token_url(request, settings),
        "token_endpoint_auth_methods_supported": [clients.PRIVATE_KEY_JWT, clients.CLIENT_SECRET_BASIC],
        "token_endpoint_auth_signing_alg_values_supported": clients.ALGORITHMS,
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": ["client-confidential-asymmetric", "client-confidential-symmetric", "permission-v2", "permission-v1"],
    }


@router.get("/.well-known/smart-configuration")
@router.get("/fhir/.well-known/smart-configuration")
def smart_configuration(request: Request, settings: SettingsDep) -> JSONResponse:
    """SMART configuration (smart-app-launch/conformance.html), open like /fhir/metadata."""
    return JSONResponse(_configuration(request, settings))
