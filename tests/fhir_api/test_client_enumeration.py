"""Issue 18 (low): unknown client ids take the same path as known ones at the token endpoint, so
neither the time nor the text of the answer tells which ids exist. Checked by the path taken
(the work done), never by timing."""

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy.orm import Session

from fhir_api.auth import clients
from fhir_api.errors import TokenRequestError
from storage.db import make_engine, migrate, session_scope

TOKEN_URL = "https://ai.hospital.example/auth/token"


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    url = f"sqlite:///{tmp_path / 'doctorai.db'}"
    migrate(url)
    engine = make_engine(url)
    try:
        with session_scope(engine) as opened:
            clients.register(opened, client_id="ris", name="", scopes=["system/*.rs"], secret="the-ris-secret")
            pem = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
                Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
            )
            clients.register(opened, client_id="ehr", name="", scopes=["system/*.rs"], jwks=clients.jwks_from_public_key(pem))
            yield opened
    finally:
        engine.dispose()


def _refusal(call: Any) -> str:
    with pytest.raises(TokenRequestError) as refused:
        call()
    assert refused.value.error == "invalid_client"
    return str(refused.value)


def test_unknown_secret_clients_pay_the_same_scrypt(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str] = []
    real = clients.secret_matches

    def spy(secret: str, stored: str) -> bool:
        checked.append(stored)
        return real(secret, stored)

    monkeypatch.setattr(clients, "secret_matches", spy)
    wrong = _refusal(lambda: clients.by_secret(session, "ris", "not-it"))
    unknown = _refusal(lambda: clients.by_secret(session, "nobody", "not-it"))
    wrong_method = _refusal(lambda: clients.by_secret(session, "ehr", "not-it"))
    assert wrong == unknown == wrong_method
    assert len(checked) == 3 and all(stored.startswith("scrypt$") for stored in checked)


def _assertion(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, alg: str, client_id: str) -> str:
    claims = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": int(time.time()) + 60, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, key, algorithm=alg)


def test_unknown_assertion_clients_get_a_signature_check(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    verified: list[object] = []
    real = jwt.decode

    def spy(token: str, key: object = None, *args: Any, **kwargs: Any) -> Any:
        if key is not None:
            verified.append(key)
        return real(token, key, *args, **kwargs)

    monkeypatch.setattr(clients.jwt, "decode", spy)
    answers = []
    for alg, key in (("ES384", ec.generate_private_key(ec.SECP384R1())), ("RS384", rsa.generate_private_key(65537, 2048))):
        for client_id in ("ehr", "nobody", "ris"):  # known (wrong key), unknown, known with a secret instead
            verified.clear()
            signed = _assertion(key, alg, client_id)
            answers.append(_refusal(lambda signed=signed: clients.by_assertion(session, signed, token_url=TOKEN_URL)))
            assert len(verified) == 1, (alg, client_id)  # one signature check each, never none
    # An RS384 assertion for a client with only an EC key is refused, not an internal error.
    assert len(set(answers)) == 1
