"""API clients of SMART Backend Services: registration, credentials and the scopes they may be granted.

http://hl7.org/fhir/smart-app-launch/backend-services.html. A client authenticates with a
JWT assertion signed by its private key (`private_key_jwt`, RFC 7523, RS384 or ES384, checked
against the JWK Set registered for it) or, for simple set-ups, with a secret
(`client_secret_basic`, RFC 6749 section 2.3.1) stored only as a scrypt hash.
"""

import functools
import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from fhir_api.auth.tokens import scope_permissions
from fhir_api.errors import TokenRequestError
from storage.tables.access import ApiClient, ClientAssertion

PRIVATE_KEY_JWT = "private_key_jwt"
CLIENT_SECRET_BASIC = "client_secret_basic"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ["RS384", "ES384"]
# SMART Backend Services: an assertion's exp is at most five minutes in the future.
MAX_ASSERTION_LIFETIME = timedelta(minutes=5)
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_secret(secret: str) -> str:
    """A salted scrypt hash of a client secret, as stored."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def secret_matches(secret: str, stored: str) -> bool:
    """Whether `secret` is the one `stored` is the hash of (compared in constant time)."""
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), dklen=32, **_SCRYPT)
    return hmac.compare_digest(candidate.hex(), digest)


def jwks_from_public_key(pem: bytes) -> str:
    """A JWK Set (JSON) holding one PEM public key (RSA or EC)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(pem)
    if isinstance(key, rsa.RSAPublicKey):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    elif isinstance(key, ec.EllipticCurvePublicKey):
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    else:
        raise ValueError("only RSA and EC public keys are supported")
    return json.dumps({"keys": [jwk]})


def register(
    session: Session, *, client_id: str, name: str, scopes: list[str], jwks: str = "", secret: str = ""
) -> ApiClient:
    """Register (or replace) a client with a JWK Set or a secret, and the scopes it may ask for."""
    if bool(jwks) == bool(secret):
        raise ValueError("a client has either a JWK Set (private_key_jwt) or a secret (client_secret_basic)")
    if jwks:
        try:  # refuse a set that cannot be used, now rather than at the first token request
            jwt.PyJWKSet.from_json(jwks)
        except jwt.PyJWTError as exc:
            raise ValueError(f"the JWK Set cannot be used: {exc}") from exc
    bad = [s for s in scopes if scope_permissions(s) is None]
    if bad or not scopes:
        raise ValueError(f"not SMART system scopes: {', '.join(bad) or '(none given)'}")
    session.execute(delete(ApiClient).where(ApiClient.client_id == client_id))
    client = ApiClient(
        client_id=client_id,
        name=name,
        scopes=" ".join(scopes),
        auth_method=PRIVATE_KEY_JWT if jwks else CLIENT_SECRET_BASIC,
        jwks=jwks,
        secret_hash=hash_secret(secret) if secret else "",
        enabled=True,
        created_at=datetime.now(UTC),
    )
    session.add(client)
    return client


def remove(session: Session, client_id: str) -> bool:
    """Remove a client; whether it existed."""
    result = session.execute(delete(ApiClient).where(ApiClient.client_id == client_id))
    return bool(getattr(result, "rowcount", 0))


def all_clients(session: Session) -> list[ApiClient]:
    """Every registered client, by id."""
    return list(session.scalars(select(ApiClient).order_by(ApiClient.client_id)))


def get_client(session: Session, client_id: str) -> ApiClient | None:
    """One registered client, or None."""
    return session.get(ApiClient, client_id)


def disable(session: Session, client: ApiClient) -> None:
    """Refuse the client's token requests from now on; tokens it holds expire on their own (short TTL)."""
    client.enabled = False
    session.flush()


def _usable(session: Session, client_id: str, method: str) -> ApiClient | None:
    """The enabled client of this id and method, or None; the callers then take the same steps anyway."""
    client = session.get(ApiClient, client_id)
    if client is None or not client.enabled or client.auth_method != method:
        return None
    return client


@functools.cache
def _decoy_secret_hash() -> str:
    """The hash an unknown client's secret is checked against: the same scrypt as a real one's."""
    return hash_secret(secrets.token_urlsafe(32))


@functools.cache
def _decoy_jwks() -> str:
    """The keys an unknown client's assertion is verified against (one of each type we accept): a
    real signature check, which never passes (their private halves are gone)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    ec_key = ec.generate_private_key(ec.SECP384R1()).public_key()
    rsa_key = rsa.generate_private_key(65537, 2048).public_key()
    keys = [jwt.algorithms.ECAlgorithm.to_jwk(ec_key), jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key)]
    return json.dumps({"keys": [json.loads(key) for key in keys]})


# Issue 18: unknown, disabled and wrong-method clients go through the same work (a scrypt of the
# secret, a signature check of the assertion) and get the same answer as a wrong credential, so
# neither the time nor the text of the answer tells which client ids exist.
_REFUSED = "unknown client or wrong credentials"


def by_secret(session: Session, client_id: str, secret: str) -> ApiClient:
    """The client whose secret this is (client_secret_basic); invalid_client otherwise."""
    client = _usable(session, client_id, CLIENT_SECRET_BASIC)
    matches = secret_matches(secret, client.secret_hash if client is not None else _decoy_secret_hash())
    if client is None or not matches:
        raise TokenRequestError("invalid_client", _REFUSED)
    return client


def _verified_claims(jwks: str, client_id: str, assertion: str, token_url: str) -> dict[str, Any]:
    header = jwt.get_unverified_header(assertion)
    # Only keys of the type the assertion's algorithm needs (RS: RSA, ES: EC), of its kid if it names one.
    kty = {"RS": "RSA", "ES": "EC"}.get(str(header.get("alg", ""))[:2], "")

    def fitting(candidates: str) -> list[jwt.PyJWK]:
        return [
            k for k in jwt.PyJWKSet.from_json(candidates).keys
            if k.key_type == kty and (not header.get("kid") or k.key_id == header["kid"])
        ]

    # No key fits: check the signature against a decoy anyway, as for an unknown client.
    for key in fitting(jwks) or fitting(_decoy_jwks()):
        try:
            claims: dict[str, Any] = jwt.decode(
                assertion,
                key.key,
                algorithms=ALGORITHMS,  # never the token's own choice beyond these (RFC 8725 section 3.1)
                audience=token_url,
                issuer=client_id,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
            return claims
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidTokenError as exc:
            raise TokenRequestError("invalid_client", f"client assertion refused: {exc}") from None
    raise TokenRequestError("invalid_client", f"client assertion refused: {_REFUSED}")


def by_assertion(session: Session, assertion: str, *, token_url: str) -> ApiClient:
    """The client that signed this assertion (private_key_jwt); invalid_client otherwise.

    Checks signature, iss = sub = client id, aud = the token URL, exp within five minutes,
    and a jti not seen before (SMART Backend Services, "Authenticating to the token endpoint").
    """
    try:
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise TokenRequestError("invalid_client", f"client assertion is not a JWT: {exc}") from None
    client_id = unverified.get("iss")
    if not isinstance(client_id, str) or unverified.get("sub") != client_id:
        raise TokenRequestError("invalid_client", "client assertion must have iss = sub = the client id")
    client = _usable(session, client_id, PRIVATE_KEY_JWT)
    claims = _verified_claims(client.jwks if client is not None else _decoy_jwks(), client_id, assertion, token_url)
    if client is None:  # the decoy key never verifies: not reached, but say so rather than assume it
        raise TokenRequestError("invalid_client", f"client assertion refused: {_REFUSED}")
    now = datetime.now(UTC)
    expires = datetime.fromtimestamp(claims["exp"], UTC)
    if expires > now + MAX_ASSERTION_LIFETIME + timedelta(seconds=30):
        raise TokenRequestError("invalid_client", "client assertion expires more than five minutes from now")
    session.execute(delete(ClientAssertion).where(ClientAssertion.expires_at < now))
    if session.get(ClientAssertion, str(claims["jti"])[:256]) is not None:
        raise TokenRequestError("invalid_client", "client assertion already used (jti replay)")
    session.add(ClientAssertion(jti=str(claims["jti"])[:256], client_id=client_id, expires_at=expires))
    return client


def grant(client: ApiClient, requested: list[str]) -> list[str]:
    """The requested scopes the client's registration covers; invalid_scope when none is."""
    allowed = [p for p in (scope_permissions(s) for s in client.scopes.split()) if p is not None]
    if not requested:
        return client.scopes.split()
    granted = []
    for scope in requested:
        wanted = scope_permissions(scope)
        if wanted is None:
            continue
        if any(kind in ("*", wanted[0]) and wanted[1] <= perms for kind, perms in allowed):
            granted.append(scope)
    if not granted:
        raise TokenRequestError("invalid_scope", "none of the requested scopes is registered for this client")
    return granted
