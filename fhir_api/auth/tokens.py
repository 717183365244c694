"""Bearer tokens (OAuth2, RFC 6750): HS256 JWTs carrying SMART App Launch v2 scopes and roles.

Scopes follow http://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html:
"system/DiagnosticReport.rs", "system/*.cruds", and the v1 forms "system/*.read", "system/*.write",
"system/*.*". Only `system/` scopes count here: this API serves back-end systems, and patient/ or
user/ scopes would need a launch context it does not have. Granular v2 scopes with a query
("system/Observation.rs?category=...") are not honoured, so they grant nothing.
"""

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from fhir_api.config import ApiSettings
from fhir_api.errors import Unauthorized

INTERACTIONS = frozenset("cruds")
ALGORITHM = "HS256"
_SCOPE = re.compile(r"system/(?P<type>\*|[A-Z][A-Za-z]+)\.(?P<perm>[cruds]+|read|write|\*)")
# v2 permissions are a subset of "cruds" in that order.
_V2_PERMISSIONS = re.compile(r"c?r?u?d?s?")
_V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass(frozen=True)
class Principal:
    """Who presented a valid token, and what it allows."""

    subject: str
    scopes: tuple[str, ...]
    roles: tuple[str, ...]
    # The token's jti, by which it can be revoked (fhir_api/auth/revocation.py); empty for a console session.
    token_id: str = ""


def issue_token(
    settings: ApiSettings, *, subject: str, scopes: list[str], roles: list[str], ttl_seconds: int | None = None
) -> str:
    """A signed access token for `subject` with these scopes and roles, valid for the configured TTL."""
    now = datetime.now(UTC)
    claims = {
        "iss": settings.jwt_issuer,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(seconds=settings.token_ttl_seconds if ttl_seconds is None else ttl_seconds),
        "jti": str(uuid.uuid4()),
        # OAuth2 carries scopes as one space-separated string (RFC 6749 section 3.3).
        "scope": " ".join(scopes),
        "roles": list(roles),
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def verify_token(settings: ApiSettings, token: str) -> Principal:
    """The principal of a valid token; Unauthorized when it is malformed, forged, expired or foreign."""
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],  # never trust the token's own "alg" header
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iat", "iss", "sub", "jti"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("the access token has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"the access token is not valid: {exc}") from exc
    scope = claims.get("scope", "")
    roles = claims.get("roles", [])
    if not isinstance(scope, str) or not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise Unauthorized("the access token has malformed scope or roles claims")
    return Principal(
        subject=str(claims["sub"]), scopes=tuple(scope.split()), roles=tuple(roles), token_id=str(claims["jti"])
    )


def scope_permissions(scope: str) -> tuple[str, frozenset[str]] | None:
    """(resource type or "*", interactions) a scope grants, or None when it grants nothing here."""
    match = _SCOPE.fullmatch(scope)
    if match is None:
        return None
    perm = match["perm"]
    if perm in _V1_PERMISSIONS:
        letters = _V1_PERMISSIONS[perm]
    elif _V2_PERMISSIONS.fullmatch(perm):
        letters = perm
    else:
        return None
    return match["type"], frozenset(letters)


def allows(principal: Principal, resource_type: str, interaction: str) -> bool:
    """Whether one of the principal's scopes grants `interaction` (c, r, u, d or s) on `resource_type`."""
    if interaction not in INTERACTIONS:
        raise ValueError(f"unknown interaction {interaction!r}")
    for scope in principal.scopes:
        granted = scope_permissions(scope)
        if granted is not None and granted[0] in ("*", resource_type) and interaction in granted[1]:
            return True
    return False


# The role an audit reader's token carries, besides a scope naming AuditEvent (DESIGN.md section 8).
AUDITOR = "auditor"
# Admin API roles (issue 7): `admin` may read and change everything under /admin, `operator` may
# only read it. SMART scopes grant nothing there, and these roles grant nothing on /fhir.
ADMIN = "admin"
OPERATOR = "operator"
# Prometheus's role: /metrics and nothing else (fhir_api/probes.py).
METRICS = "metrics"
# Every role a token may carry (`doctorai token --role`).
ROLES = (ADMIN, OPERATOR, AUDITOR, METRICS)


def allows_audit(principal: Principal, interaction: str) -> bool:
    """Whether the principal may read (r) or search (s) the audit trail.

    It takes the `auditor` role and a scope that names AuditEvent itself (system/AuditEvent.rs):
    wildcard scopes such as system/*.cruds, which integration clients hold, do not reach the
    audit trail, which is a compliance officer's tool.
    """
    if AUDITOR not in principal.roles:
        return False
    for scope in principal.scopes:
        granted = scope_permissions(scope)
        if granted is not None and granted[0] == "AuditEvent" and interaction in granted[1]:
            return True
    return False
