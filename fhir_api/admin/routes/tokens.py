"""/admin/tokens: revoking a bearer token before it expires (issue 18; admin only).

The body names the token by its jti or gives the token itself (its signature is checked, so only
this engine's tokens are named that way). The gate refuses a revoked token on every request
(fhir_api/auth/revocation.py); the revocation is audited as DCM 110137 User Security Attributes Changed.
"""

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from audit.records import ADMIN_SECURITY, USER_SECURITY_ATTRIBUTES_CHANGED
from fhir_api.admin.access import ActorDep, audit_change
from fhir_api.auth import revocation
from fhir_api.deps import EngineDep, SettingsDep
from storage.db import session_scope

router = APIRouter(prefix="/tokens", tags=["tokens"])


class RevokeIn(BaseModel):
    """The token to revoke: its jti, or the token itself."""

    model_config = ConfigDict(extra="forbid")

    jti: str = Field("", max_length=revocation.JTI_MAX_LENGTH, description="the token's jti claim")
    token: str = Field("", max_length=8192, description="the token itself (a JWT this engine signed)")
    reason: str = Field("", max_length=256)


class RevokedOut(BaseModel):
    """A revoked token: refused from now on."""

    jti: str
    subject: str
    expires_at: datetime | None
    revoked_at: datetime
    revoked_by: str
    reason: str


@router.post("/revoke")
def revoke_token(
    body: RevokeIn, request: Request, engine: EngineDep, settings: SettingsDep, actor: ActorDep
) -> RevokedOut:
    """Revoke a token (again: the first revocation is answered); 422 when the body names none."""
    what = revocation.target(settings, jti=body.jti, token=body.token)
    with session_scope(engine) as session:
        row = revocation.revoke(session, what, by=actor.subject, reason=body.reason)
        after = revocation.document(row)
        detail = {"alert_type": USER_SECURITY_ATTRIBUTES_CHANGED}
        audit_change(session, actor, hop=ADMIN_SECURITY, before=None, after=after, detail=detail)
    revocations: revocation.Revocations = request.app.state.revocations
    revocations.mark(row.jti)
    return RevokedOut.model_validate(after)
