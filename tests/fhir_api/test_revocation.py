"""Issue 18, finding 15: the metrics role, least-privilege CLI tokens with a jti, and revocation
(POST /admin/tokens/revoke, `doctorai token revoke`), checked on every request."""

import os
import subprocess
import sys
from pathlib import Path

import httpx
import jwt
from sqlalchemy import select

from fhir_api.auth.revocation import Revocations
from fhir_api.auth.tokens import issue_token
from fhir_api.config import ApiSettings
from storage.db import make_engine, migrate, session_scope
from storage.tables.access import RevokedToken
from storage.tables.audit import AuditEvent
from tests.fhir_api.conftest import Api

SECRET = "fhir-server-test-secret-0123456789abcdef"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_metrics_role_reaches_metrics_only(api: Api) -> None:
    metrics = api.role("metrics", subject="prometheus")
    assert httpx.get(f"{api.url}/metrics", headers=metrics).status_code == 200
    assert httpx.get(f"{api.url}/admin/rules", headers=metrics).status_code == 403
    assert httpx.get(f"{api.url}/fhir/Patient", headers=metrics).status_code == 403


def test_a_token_without_jti_is_refused(api: Api) -> None:
    claims = {"iss": "doctorai", "sub": "forged", "iat": 1, "exp": 4_000_000_000, "scope": "system/*.rs", "roles": []}
    token = jwt.encode(claims, api.settings.jwt_secret, algorithm="HS256")
    assert httpx.get(f"{api.url}/fhir/Patient", headers=_bearer(token)).status_code == 401


def test_admin_revokes_a_token_by_token_or_jti(api: Api) -> None:
    stolen = issue_token(api.settings, subject="ehr", scopes=["system/*.rs"], roles=[])
    other = issue_token(api.settings, subject="ehr2", scopes=["system/*.rs"], roles=[])
    for token in (stolen, other):
        assert httpx.get(f"{api.url}/fhir/Patient", headers=_bearer(token)).status_code == 200
    admin = api.role("admin", subject="security-officer")
    revoked = httpx.post(f"{api.url}/admin/tokens/revoke", json={"token": stolen, "reason": "leaked"}, headers=admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["subject"] == "ehr" and revoked.json()["revoked_by"] == "security-officer"
    refused = httpx.get(f"{api.url}/fhir/Patient", headers=_bearer(stolen))
    assert refused.status_code == 401 and "revoked" in refused.text
    jti = jwt.decode(other, options={"verify_signature": False})["jti"]
    assert httpx.post(f"{api.url}/admin/tokens/revoke", json={"jti": jti}, headers=admin).status_code == 200
    assert httpx.get(f"{api.url}/metrics", headers=_bearer(other)).status_code == 401
    with session_scope(api.engine) as session:
        rows = list(session.scalars(select(RevokedToken)))
        audited = list(session.scalars(select(AuditEvent).where(AuditEvent.subtype == "admin-security")))
    assert {r.jti for r in rows} == {jwt.decode(stolen, options={"verify_signature": False})["jti"], jti}
    assert len(audited) == 2 and all(a.agent_who == "security-officer" for a in audited)


def test_bad_revocations_are_problems(api: Api) -> None:
    admin = api.role("admin")
    foreign = issue_token(ApiSettings(jwt_secret="someone-else-entirely-0123456789abcdef"), subject="x", scopes=[], roles=[])
    for body in ({}, {"jti": "a", "token": "b.c.d"}, {"token": "not-a-jwt"}, {"token": foreign}, {"jti": "x" * 500},
                 {"jti": "bad\nid"}, {"jti": "a", "extra": 1}, [1, 2]):
        answer = httpx.post(f"{api.url}/admin/tokens/revoke", json=body, headers=admin)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    # Only the admin revokes.
    answer = httpx.post(f"{api.url}/admin/tokens/revoke", json={"jti": "a"}, headers=api.role("operator"))
    assert answer.status_code == 403


def test_revocations_are_remembered_for_a_short_time(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'doctorai.db'}"
    migrate(url)
    engine = make_engine(url)
    now = [0.0]
    cache = Revocations(5.0, clock=lambda: now[0])
    lookups = []
    try:
        assert not cache.revoked(engine, "t1")
        with session_scope(engine) as session:
            from datetime import UTC, datetime

            session.add(RevokedToken(jti="t1", subject="", expires_at=None, revoked_at=datetime.now(UTC), revoked_by="cli"))
        lookups.append(cache.revoked(engine, "t1"))  # remembered as not revoked within the interval
        now[0] = 5.1
        lookups.append(cache.revoked(engine, "t1"))  # looked up again after it
    finally:
        engine.dispose()
    assert lookups == [False, True]


def test_cli_tokens_grant_only_what_is_asked_and_can_be_revoked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'doctorai.db'}"
    migrate(url)
    env = {**os.environ, "DOCTORAI_DATABASE_URL": url, "DOCTORAI_VAR_DIR": str(tmp_path), "DOCTORAI_JWT_SECRET": SECRET}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "doctorai.cli", "token", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)

    nothing = cli()
    assert nothing.returncode != 0 and "--role" in nothing.stderr
    printed = cli("--role", "metrics")
    assert printed.returncode == 0, printed.stderr
    claims = jwt.decode(printed.stdout.strip(), SECRET, algorithms=["HS256"], issuer="doctorai")
    assert claims["roles"] == ["metrics"] and claims["scope"] == "" and claims["jti"]
    assert claims["exp"] - claims["iat"] == ApiSettings().token_ttl_seconds <= 24 * 3600
    revoked = cli("revoke", printed.stdout.strip(), "--reason", "rotated")
    assert revoked.returncode == 0 and claims["jti"] in revoked.stdout, revoked.stderr
    garbage = cli("revoke", "a.b.c")
    assert garbage.returncode != 0 and len(garbage.stderr.strip().splitlines()) == 1
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            row = session.get_one(RevokedToken, claims["jti"])
            audited = list(session.scalars(select(AuditEvent).where(AuditEvent.subtype == "admin-security")))
    finally:
        engine.dispose()
    assert row.subject == "local-cli" and row.reason == "rotated" and row.expires_at is not None
    assert len(audited) == 1 and audited[0].agent_who.startswith("cli:")
