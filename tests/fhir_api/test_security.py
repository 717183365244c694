"""SMART Backend Services: the token endpoint, registered clients, and scope enforcement on every route."""

import base64
import time
import uuid
from collections.abc import Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_api import clients
from fhir_api.auth import verify_token
from storage.db import session_scope
from tests.fhir_api.conftest import Api
from tests.fhir_api.test_interactions import FHIR_JSON, example, outcome

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def keys() -> dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]:
    return {"RS384": rsa.generate_private_key(65537, 2048), "ES384": ec.generate_private_key(ec.SECP384R1())}


@pytest.fixture
def registered(api: Api, keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]) -> Iterator[str]:
    """Clients: one per signing algorithm, and one with a secret (returned)."""
    secret = "s3cret-for-the-basic-client"
    with session_scope(api.engine) as session:
        for alg, key in keys.items():
            clients.register(
                session,
                client_id=f"ehr-{alg}",
                name="EHR",
                scopes=["system/DiagnosticReport.rs", "system/Patient.r"],
                jwks=clients.jwks_from_public_key(_pem(key)),
            )
        clients.register(session, client_id="ris", name="RIS", scopes=["system/*.cruds"], secret=secret)
    yield secret


def assertion(api: Api, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, alg: str, **overrides: object) -> str:
    """A SMART Backend Services client assertion (RFC 7523)."""
    claims = {
        "iss": f"ehr-{alg}",
        "sub": f"ehr-{alg}",
        "aud": f"{api.url}/auth/token",
        "exp": int(time.time()) + 240,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm=alg)


def ask(api: Api, form: dict[str, str], headers: dict[str, str] | None = None) -> httpx.Response:
    """POST a token request."""
    return httpx.post(f"{api.url}/auth/token", data=form, headers={**FORM, **(headers or {})})


def _jwt_form(value: str, scope: str = "system/DiagnosticReport.rs") -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": clients.ASSERTION_TYPE,
        "client_assertion": value,
    }


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_private_key_jwt_gets_a_short_lived_token(
    api: Api, registered: str, keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey], alg: str
) -> None:
    signed = assertion(api, keys[alg], alg)
    response = ask(api, _jwt_form(signed, "system/DiagnosticReport.rs system/Observation.rs"))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 300
    assert body["scope"] == "system/DiagnosticReport.rs"  # Observation is not registered for this client
    principal = verify_token(api.settings, body["access_token"])
    assert principal.subject == f"ehr-{alg}" and principal.scopes == ("system/DiagnosticReport.rs",)
    token = {"Authorization": f"Bearer {body['access_token']}"}
    assert httpx.get(f"{api.url}/fhir/DiagnosticReport", headers=token).status_code == 200
    outcome(httpx.get(f"{api.url}/fhir/Patient", headers=token), 403, "forbidden")
    # The same assertion twice is a replay (jti).
    replay = ask(api, _jwt_form(signed))
    assert replay.status_code == 401 and replay.json()["error"] == "invalid_client"


def test_bad_assertions_are_refused(
    api: Api, registered: str, keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]
) -> None:
    key = keys["RS384"]
    other = rsa.generate_private_key(65537, 2048)
    bad = {
        "wrong key": jwt.encode({"iss": "ehr-RS384", "sub": "ehr-RS384", "aud": f"{api.url}/auth/token",
                                 "exp": int(time.time()) + 60, "jti": "x1"}, other, algorithm="RS384"),
        "wrong audience": assertion(api, key, "RS384", aud="https://elsewhere/token"),
        "expired": assertion(api, key, "RS384", exp=int(time.time()) - 120),
        "too long": assertion(api, key, "RS384", exp=int(time.time()) + 3600),
        "unknown client": assertion(api, key, "RS384", iss="nobody", sub="nobody"),
        "iss is not sub": assertion(api, key, "RS384", sub="someone-else"),
        "RS256": assertion(api, key, "RS256"),
        "not a JWT": "garbage",
    }
    for why, value in bad.items():
        response = ask(api, _jwt_form(value))
        assert response.status_code == 401, why
        assert response.json()["error"] == "invalid_client", why
    assert ask(api, {**_jwt_form(assertion(api, key, "RS384")), "grant_type": "password"}).json()["error"] == (
        "unsupported_grant_type"
    )
    denied = ask(api, _jwt_form(assertion(api, key, "RS384"), "system/Observation.rs"))
    assert denied.status_code == 400 and denied.json()["error"] == "invalid_scope"


def test_client_secret_basic(api: Api, registered: str) -> None:
    basic = base64.b64encode(f"ris:{registered}".encode()).decode()
    response = ask(api, {"grant_type": "client_credentials", "scope": "system/Patient.cruds"}, {"Authorization": f"Basic {basic}"})
    assert response.status_code == 200, response.text
    token = {"Authorization": f"Bearer {response.json()['access_token']}", **FHIR_JSON}
    assert httpx.post(f"{api.url}/fhir/Patient", json=example("Patient-example.json"), headers=token).status_code == 201
    wrong = base64.b64encode(b"ris:not-the-secret").decode()
    refused = ask(api, {"grant_type": "client_credentials"}, {"Authorization": f"Basic {wrong}"})
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    with session_scope(api.engine) as session:
        stored = next(c for c in clients.all_clients(session) if c.client_id == "ris")
    assert registered not in stored.secret_hash and stored.secret_hash.startswith("scrypt$")


def test_smart_configuration_is_open(api: Api) -> None:
    for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
        config = httpx.get(f"{api.url}{path}").json()
        assert config["token_endpoint"] == f"{api.url}/auth/token"
        assert set(config["token_endpoint_auth_methods_supported"]) == {"private_key_jwt", "client_secret_basic"}
        assert "client-confidential-asymmetric" in config["capabilities"]


# Every FHIR route with the scope letter it needs on Patient: (method, path, letter, body).
ROUTES = [
    ("GET", "/fhir/Patient", "s", None),
    ("POST", "/fhir/Patient/_search", "s", None),
    ("GET", "/fhir/Patient/_history", "s", None),
    ("GET", "/fhir/Patient/pat-1", "r", None),
    ("GET", "/fhir/Patient/pat-1/_history", "r", None),
    ("GET", "/fhir/Patient/pat-1/_history/1", "r", None),
    ("POST", "/fhir/Patient", "c", "create"),
    ("PUT", "/fhir/Patient/pat-1", "u", "update"),
    ("PUT", "/fhir/Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|12345", "u", "create"),
    ("DELETE", "/fhir/Patient/pat-1", "d", None),
    ("DELETE", "/fhir/Patient?identifier=nobody", "d", None),
    ("POST", "/fhir", "c", "transaction"),
]


def _request(api: Api, method: str, path: str, body: str | None, headers: dict[str, str]) -> httpx.Response:
    patient = {**example("Patient-example.json"), "id": "pat-1"}
    payloads = {
        "create": patient,
        "update": patient,
        "transaction": {"resourceType": "Bundle", "type": "transaction",
                        "entry": [{"request": {"method": "POST", "url": "Patient"}, "resource": patient}]},
    }
    extra = FHIR_JSON if body else {}
    return httpx.request(method, f"{api.url}{path}", json=payloads.get(body or ""), headers={**headers, **extra})


@pytest.mark.parametrize(("method", "path", "letter", "body"), ROUTES)
def test_every_route_checks_the_scope(api: Api, method: str, path: str, letter: str, body: str | None) -> None:
    with httpx.Client(base_url=api.url, headers=api.token(["system/*.cruds"])) as admin:
        assert admin.put("/fhir/Patient/pat-1", json={**example("Patient-example.json"), "id": "pat-1"}, headers=FHIR_JSON).status_code in (200, 201)
    no_token = _request(api, method, path, body, {})
    outcome(no_token, 401, "login")
    assert no_token.headers["www-authenticate"].startswith("Bearer")
    outcome(_request(api, method, path, body, api.token(["system/Patient.cruds"], ttl=-30)), 401, "login")
    others = "".join(c for c in "cruds" if c != letter)
    outcome(_request(api, method, path, body, api.token([f"system/Patient.{others}"])), 403, "forbidden")
    outcome(_request(api, method, path, body, api.token([f"system/Observation.{letter}"])), 403, "forbidden")
    allowed = _request(api, method, path, body, api.token([f"system/Patient.{letter}"]))
    assert allowed.status_code < 300, allowed.text
