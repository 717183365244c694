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

from audit.log import trail
from fhir_api.auth import clients
from fhir_api.auth.tokens import verify_token
from fhir_api.config import ApiSettings
from fhir_api.app import create_app
from storage.config import StorageSettings
from storage.db import make_engine, session_scope
from tests.fhir_api.conftest import Api, serving
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


def test_the_assertion_audience_never_comes_from_the_host_header(
    api: Api, registered: str, keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]
) -> None:
    """Issue 18, finding 13: an assertion made for another server (its aud that server's token URL)
    is refused even when the request names that server in Host; discovery does not echo Host either."""
    key = keys["RS384"]
    forged_host = {"Host": "attacker.example"}
    elsewhere = assertion(api, key, "RS384", aud="http://attacker.example/auth/token")
    refused = ask(api, _jwt_form(elsewhere), forged_host)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client", refused.text
    config = httpx.get(f"{api.url}/.well-known/smart-configuration", headers=forged_host).json()
    assert config["token_endpoint"] == f"{api.url}/auth/token"
    # The address the connection reached still works, whatever Host says.
    assert ask(api, _jwt_form(assertion(api, key, "RS384")), forged_host).status_code == 200


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


# --- HTTP security on by default (fhir_api/security.py) ------------------------------------

PUBLIC = {"/healthz", "/readyz", "/fhir/metadata", "/.well-known/smart-configuration",
          "/fhir/.well-known/smart-configuration", "/auth/token"}
PATH_VALUES = {
    "resource_type": "Patient",
    "resource_id": "pat-1",
    "version_id": "1",
    "record_id": "1",
    # DICOMweb (fhir_api/dicomweb): UIDs, a frame list and a tag.
    "study": "1.2.3",
    "series": "1.2.3.4",
    "sop": "1.2.3.4.5",
    "frame_list": "1",
    "tag": "7FE00010",
}


def test_every_route_but_the_public_ones_needs_a_token(api: Api) -> None:
    with httpx.Client(base_url=api.url) as client:
        outcome(client.get("/openapi.json"), 401, "login")  # the document itself is not public
        document = client.get("/openapi.json", headers=api.token(["system/*.rs"])).json()
        routes = [(method.upper(), path) for path, item in document["paths"].items() for method in item]
        assert len(routes) > 20 and ("GET", "/fhir/AuditEvent") in routes and ("GET", "/metrics") in routes
        assert ("GET", "/dicomweb/studies") in routes  # DICOMweb is not public
        for method, path in routes:
            url = path.format(**PATH_VALUES)
            response = client.request(method, url)
            if path in PUBLIC:
                assert response.status_code != 401, (method, path)
            else:
                outcome(response, 401, "login")
                assert response.headers["www-authenticate"] == 'Bearer realm="doctorai"', (method, path)
        assert {p for _, p in routes} >= PUBLIC - {"/fhir/.well-known/smart-configuration"}
        # Paths no route serves are refused the same way, so they reveal nothing.
        outcome(client.get("/no/such/route"), 401, "login")


def test_failed_authentication_and_token_issue_are_audited(api: Api, registered: str) -> None:
    forged = api.token(["system/*.cruds"])["Authorization"][:-3] + "xyz"
    outcome(httpx.get(f"{api.url}/fhir/Patient", headers={"Authorization": forged}), 401, "login")
    outcome(httpx.get(f"{api.url}/fhir/Patient", headers=api.token(["system/*.cruds"], ttl=-30)), 401, "login")
    outcome(httpx.get(f"{api.url}/fhir/Patient"), 401, "login")  # no credentials: no attempt, no record
    basic = base64.b64encode(f"ris:{registered}".encode()).decode()
    assert ask(api, {"grant_type": "client_credentials"}, {"Authorization": f"Basic {basic}"}).status_code == 200
    wrong = base64.b64encode(b"ris:not-the-secret").decode()
    assert ask(api, {"grant_type": "client_credentials"}, {"Authorization": f"Basic {wrong}"}).status_code == 401
    with session_scope(api.engine) as session:
        records = trail(session, correlation_id="auth")
        seen = [(r.subtype, r.agent_who, r.outcome, r.entity_what) for r in records]
    assert seen == [
        ("authentication-failed", "anonymous", "4", "/fhir/Patient"),
        ("authentication-failed", "anonymous", "4", "/fhir/Patient"),
        ("token-issued", "ris", "0", "/auth/token"),
        ("authentication-failed", "anonymous", "4", "/auth/token"),
    ]
    assert "expired" in records[1].detail["reason"] and records[2].detail["scope"] == "system/*.cruds"


@pytest.fixture
def strict_api(db_url: str) -> Iterator[Api]:
    """The API with small limits and one allowed browser origin."""
    settings = ApiSettings(
        jwt_secret="fhir-server-test-secret-0123456789abcdef",
        rate_limit_per_second=0.5,
        rate_limit_burst=5,
        max_body_bytes=4000,
        cors_allow_origins=["https://viewer.hospital.example"],
    )
    engine = make_engine(db_url)
    try:
        with serving(create_app(settings, StorageSettings(database_url=db_url, s3_endpoint="127.0.0.1:1"))) as url:
            yield Api(url=url, engine=engine, settings=settings)
    finally:
        engine.dispose()


def test_security_headers_on_every_answer(api: Api) -> None:
    answers = [
        httpx.get(f"{api.url}/fhir/Patient", headers=api.token(["system/Patient.rs"])),
        httpx.get(f"{api.url}/fhir/Patient"),
        httpx.get(f"{api.url}/fhir/metadata"),
    ]
    for response in answers:
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"
        assert "strict-transport-security" not in response.headers  # plain HTTP
        assert "access-control-allow-origin" not in httpx.get(
            f"{api.url}/fhir/metadata", headers={"Origin": "https://evil.example"}
        ).headers  # CORS closed by default
    # Behind a TLS-terminating proxy (uvicorn trusts X-Forwarded-Proto from loopback): HSTS.
    proxied = httpx.get(f"{api.url}/fhir/metadata", headers={"X-Forwarded-Proto": "https"})
    assert proxied.headers["strict-transport-security"].startswith("max-age=63072000")


def test_cors_allowlist_body_limit_and_rate_limit(strict_api: Api) -> None:
    api = strict_api
    allowed, other = "https://viewer.hospital.example", "https://evil.example"
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    ok = httpx.options(f"{api.url}/fhir/Patient", headers={"Origin": allowed, **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == allowed
    refused = httpx.options(f"{api.url}/fhir/Patient", headers={"Origin": other, **preflight})
    assert "access-control-allow-origin" not in refused.headers
    big = {**example("Patient-example.json"), "text": {"status": "generated", "div": "<div>" + "x" * 5000 + "</div>"}}
    writer = {**api.token(["system/Patient.cruds"], subject="big-writer"), **FHIR_JSON}
    outcome(httpx.post(f"{api.url}/fhir/Patient", json=big, headers=writer), 413, "too-long")
    chunks = (b"x" * 1000 for _ in range(6))  # no Content-Length: counted while read
    outcome(httpx.post(f"{api.url}/fhir/Patient", content=chunks, headers=writer), 413, "too-long")
    reader = api.token(["system/Patient.rs"], subject="busy-client")
    answers = [httpx.get(f"{api.url}/fhir/Patient", headers=reader) for _ in range(8)]
    assert [a.status_code for a in answers].count(200) <= 6  # a burst of 5 and at most one refill
    throttled = outcome(answers[-1], 429, "throttled")
    assert throttled is not None and int(answers[-1].headers["retry-after"]) >= 1
    # Another client has its own bucket; probes are never limited.
    assert httpx.get(f"{api.url}/fhir/Patient", headers=api.token(["system/Patient.rs"], subject="calm")).status_code == 200
    assert all(httpx.get(f"{api.url}/healthz").status_code == 200 for _ in range(8))
