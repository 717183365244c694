"""Bearer tokens and SMART scopes."""

import secrets

import jwt
import pytest

from fhir_api.auth.tokens import Principal, allows, issue_token, verify_token
from fhir_api.config import ApiSettings, ProductionConfigError, check_production
from fhir_api.errors import Unauthorized
from storage.config import StorageSettings

SETTINGS = ApiSettings(jwt_secret="auth-test-secret-0123456789abcdef0123")


def _principal(*scopes: str) -> Principal:
    return Principal(subject="s", scopes=scopes, roles=())


def test_token_round_trip() -> None:
    token = issue_token(SETTINGS, subject="ehr", scopes=["system/DiagnosticReport.rs"], roles=["auditor"])
    principal = verify_token(SETTINGS, token)
    assert principal == Principal(
        subject="ehr", scopes=("system/DiagnosticReport.rs",), roles=("auditor",), token_id=principal.token_id
    )
    assert principal.token_id == jwt.decode(token, options={"verify_signature": False})["jti"]


def test_foreign_issuer_and_alg_none_are_refused() -> None:
    other = ApiSettings(jwt_secret=SETTINGS.jwt_secret, jwt_issuer="someone-else")
    with pytest.raises(Unauthorized):
        verify_token(SETTINGS, issue_token(other, subject="x", scopes=[], roles=[]))
    unsigned = jwt.encode({"sub": "x", "iss": "doctorai", "iat": 0, "exp": 2**40}, key=None, algorithm="none")
    with pytest.raises(Unauthorized):
        verify_token(SETTINGS, unsigned)


@pytest.mark.parametrize(
    ("scope", "resource_type", "interaction", "allowed"),
    [
        ("system/DiagnosticReport.rs", "DiagnosticReport", "s", True),
        ("system/DiagnosticReport.rs", "DiagnosticReport", "r", True),
        ("system/DiagnosticReport.rs", "DiagnosticReport", "c", False),
        ("system/DiagnosticReport.rs", "Observation", "r", False),
        ("system/*.cruds", "Patient", "d", True),
        ("system/*.read", "Observation", "s", True),
        ("system/*.read", "Observation", "u", False),
        ("system/Patient.write", "Patient", "c", True),
        ("system/*.*", "ImagingStudy", "r", True),
        ("system/Patient.r", "DiagnosticReport", "s", False),
        # Permissions out of SMART v2 order, other contexts, and granular queries grant nothing.
        ("system/DiagnosticReport.sr", "DiagnosticReport", "r", False),
        ("patient/DiagnosticReport.rs", "DiagnosticReport", "r", False),
        ("user/*.cruds", "DiagnosticReport", "r", False),
        ("system/Observation.rs?category=imaging", "Observation", "r", False),
    ],
)
def test_scopes(scope: str, resource_type: str, interaction: str, allowed: bool) -> None:
    assert allows(_principal(scope), resource_type, interaction) is allowed


def test_production_refuses_default_or_weak_secrets() -> None:
    check_production(ApiSettings(), StorageSettings(env="development"))
    production = StorageSettings(env="production", s3_access_key="site-key", s3_secret_key="site-secret-0123")
    # Issue 18: the example secret we ship, and keys long enough but easy to guess, are refused too.
    for secret in ["", "doctorai-local-development-secret", "short", "x" * 32, "0123456789abcdef" * 2,
                   "change-me-to-a-random-string-of-at-least-32-bytes", "my-CHANGEME-secret-0123456789abcdefghij"]:
        with pytest.raises(ProductionConfigError, match="DOCTORAI_JWT_SECRET"):
            check_production(ApiSettings(jwt_secret=secret), production)
    strong = secrets.token_urlsafe(32)
    check_production(ApiSettings(jwt_secret=strong, public_base_url="https://ai.hospital.example"), production)
    # Issue 18: the SMART assertion audience is the public URL, never the Host header: required in production.
    with pytest.raises(ProductionConfigError, match="DOCTORAI_PUBLIC_BASE_URL"):
        check_production(ApiSettings(jwt_secret=strong), production)
    # The object-store keys are checked for the API as for every other process.
    with pytest.raises(ProductionConfigError, match="DOCTORAI_S3_SECRET_KEY"):
        check_production(ApiSettings(jwt_secret=strong), StorageSettings(env="production", s3_access_key="site-key"))
