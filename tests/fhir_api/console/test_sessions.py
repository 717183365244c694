"""People at the console (fhir_api/console/routes.py, fhir_api/auth/sessions.py and users.py, the gate):
sign-in and its cookie, CSRF on every change, lock-out, time-outs, sign-out, roles, and the audit of each."""

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from fhir_api.app import create_app
from fhir_api.auth.users import hash_password
from fhir_api.config import ApiSettings
from storage.config import StorageSettings
from storage.db import make_engine, migrate, session_scope
from storage.tables.access import ConsoleSession, User
from storage.tables.audit import AuditEvent
from storage.users import add_user
from tests.fhir_api.conftest import Api, serving

PASSWORD = "a long enough passphrase"
HASH = hash_password(PASSWORD)  # once: a slow hash is slow on purpose
SETTINGS = ApiSettings(
    jwt_secret="fhir-server-test-secret-0123456789abcdef",
    console_lockout_failures=3,
    console_lockout_seconds=600,
    console_idle_timeout_seconds=900,
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database with three people, one of each role, copied for each test."""
    path = tmp_path_factory.mktemp("console-sessions") / "template.db"
    url = f"sqlite:///{path}"
    migrate(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        for name, role in (("ada", "admin"), ("otto", "operator"), ("alma", "auditor")):
            add_user(session, name=name, role=role, password_hash=HASH, now=datetime.now(UTC))
    engine.dispose()
    return path


@pytest.fixture
def api(template: Path, tmp_path: Path) -> Iterator[Api]:
    """The API on a fresh copy of the template database."""
    # SQLite's backup API copies what the write-ahead log holds too.
    with closing(sqlite3.connect(template)) as source, closing(sqlite3.connect(tmp_path / "doctorai.db")) as copy:
        source.backup(copy)
    url = f"sqlite:///{tmp_path / 'doctorai.db'}"
    engine = make_engine(url)
    try:
        with serving(create_app(SETTINGS, StorageSettings(database_url=url, s3_endpoint="127.0.0.1:1"))) as base:
            yield Api(url=base, engine=engine, settings=SETTINGS)
    finally:
        engine.dispose()


@pytest.fixture
def sign_in(api: Api) -> Iterator[Callable[..., tuple[httpx.Client, httpx.Response]]]:
    """Sign in as someone: a client of their own (it keeps the cookie) and the sign-in's answer."""
    clients: list[httpx.Client] = []

    def signing_in(name: str, password: str = PASSWORD) -> tuple[httpx.Client, httpx.Response]:
        client = httpx.Client(base_url=api.url)
        clients.append(client)
        return client, client.post("/console/session", json={"name": name, "password": password})

    yield signing_in
    for client in clients:
        client.close()


SignIn = Callable[..., tuple[httpx.Client, httpx.Response]]


def subtypes(api: Api, agent: str) -> list[str]:
    with session_scope(api.engine) as session:
        return list(session.scalars(select(AuditEvent.subtype).where(AuditEvent.agent_who == agent).order_by(AuditEvent.id)))


def test_sign_in_sets_an_http_only_strict_cookie_and_answers_the_role_table(api: Api, sign_in: SignIn) -> None:
    client, answer = sign_in("otto")
    assert answer.status_code == 200, answer.text
    cookie = answer.headers["set-cookie"].lower()
    assert cookie.startswith("doctorai_session=") and "httponly" in cookie and "samesite=strict" in cookie
    assert "path=/" in cookie and "secure" not in cookie  # plain HTTP here; Secure over HTTPS
    me = answer.json()
    assert me["name"] == "otto" and me["role"] == "operator" and len(me["csrf_token"]) >= 32
    assert "studies" in me["reads"] and "audit" not in me["reads"] and "users" not in me["reads"] and me["changes"] == []
    # The session reads the admin API; it is no credential on FHIR routes.
    assert client.get("/admin/studies").status_code == 200
    assert client.get("/fhir/Patient").status_code == 401
    assert client.get("/console/session").json()["csrf_token"] == me["csrf_token"]
    assert subtypes(api, "otto") == ["user-signed-in"]


def test_only_the_hash_of_a_session_id_is_stored(api: Api, sign_in: SignIn) -> None:
    client, _ = sign_in("ada")
    session_id = client.cookies["doctorai_session"]
    with session_scope(api.engine) as session:
        [stored] = session.scalars(select(ConsoleSession.id_hash))
    assert stored != session_id and len(stored) == 64


def test_every_change_needs_the_sessions_csrf_token(api: Api, sign_in: SignIn) -> None:
    client, answer = sign_in("ada")
    rule = {"name": "x", "hold": True}
    refused = client.post("/admin/rules/validate", json=rule)
    assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
    wrong = client.post("/admin/rules/validate", json=rule, headers={"X-CSRF-Token": "not-the-token"})
    assert wrong.status_code == 403
    ok = client.post("/admin/rules/validate", json=rule, headers={"X-CSRF-Token": answer.json()["csrf_token"]})
    assert ok.status_code == 200 and ok.json()["valid"] is True
    # Changes are audited with the person's name as agent.
    created = client.post("/admin/rules", json=rule, headers={"X-CSRF-Token": answer.json()["csrf_token"]})
    assert created.status_code == 201
    assert "admin-configuration" in subtypes(api, "ada")


def test_a_sign_in_from_another_sites_page_is_refused(api: Api) -> None:
    answer = httpx.post(f"{api.url}/console/session", json={"name": "ada", "password": PASSWORD}, headers={"Origin": "https://evil.example"})
    assert answer.status_code == 403


def test_refusals_look_alike_and_lock_the_account_after_repeated_failures(api: Api, sign_in: SignIn) -> None:
    unknown = sign_in("nobody")[1]
    wrong = sign_in("ada", "wrong password")[1]
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json()["detail"] == wrong.json()["detail"]
    for _ in range(2):  # three failures in a row lock it (console_lockout_failures)
        assert sign_in("ada", "wrong password")[1].status_code == 401
    assert sign_in("ada")[1].status_code == 401  # the right password, but locked
    assert subtypes(api, "ada") == ["user-sign-in-failed"] * 3 + ["user-locked-out", "user-sign-in-failed"]
    with session_scope(api.engine) as session:
        locked = session.get_one(User, "ada").locked_until
        assert locked is not None and locked > datetime.now(UTC) + timedelta(seconds=500)
        # The lock-out passes with its time.
        session.execute(update(User).where(User.name == "ada").values(locked_until=datetime.now(UTC) - timedelta(seconds=1)))
    assert sign_in("ada")[1].status_code == 200


def test_a_session_ends_when_idle_and_at_the_end_of_its_lifetime(api: Api, sign_in: SignIn) -> None:
    client, _ = sign_in("otto")
    assert client.get("/admin/studies").status_code == 200
    with session_scope(api.engine) as session:
        session.execute(update(ConsoleSession).values(last_seen_at=datetime.now(UTC) - timedelta(seconds=901)))
    assert client.get("/admin/studies").status_code == 401
    client, _ = sign_in("otto")
    with session_scope(api.engine) as session:
        session.execute(update(ConsoleSession).values(created_at=datetime.now(UTC) - timedelta(hours=9)))
    assert client.get("/admin/studies").status_code == 401


def test_sign_out_ends_the_session_and_is_audited(api: Api, sign_in: SignIn) -> None:
    client, answer = sign_in("alma")
    csrf = {"X-CSRF-Token": answer.json()["csrf_token"]}
    assert client.delete("/console/session").status_code == 403  # sign-out is a change too
    out = client.delete("/console/session", headers=csrf)
    assert out.status_code == 204 and 'doctorai_session=""' in out.headers["set-cookie"]
    stale = httpx.get(f"{api.url}/admin/audit", cookies={"doctorai_session": answer.cookies["doctorai_session"]})
    assert stale.status_code == 401
    assert subtypes(api, "alma") == ["user-signed-in", "user-signed-out"]


def test_roles_decide_what_a_session_may_read(api: Api, sign_in: SignIn) -> None:
    auditor, _ = sign_in("alma")
    assert auditor.get("/admin/audit").status_code == 200
    assert auditor.get("/admin/studies").status_code == 403
    operator, _ = sign_in("otto")
    assert operator.get("/admin/audit").status_code == 403 and operator.get("/admin/users").status_code == 403


def test_a_role_change_ends_the_persons_sessions(api: Api, sign_in: SignIn) -> None:
    otto, _ = sign_in("otto")
    ada, answer = sign_in("ada")
    changed = ada.put("/admin/users/otto", json={"role": "auditor"}, headers={"X-CSRF-Token": answer.json()["csrf_token"]})
    assert changed.status_code == 200
    assert otto.get("/admin/studies").status_code == 401
    # Nobody demotes, disables or removes themselves.
    assert ada.put("/admin/users/ada", json={"disabled": True}, headers={"X-CSRF-Token": answer.json()["csrf_token"]}).status_code == 409


def test_the_console_page_loads_without_a_credential_under_its_own_policy(api: Api) -> None:
    page = httpx.get(f"{api.url}/console")
    assert page.status_code == 200 and "<main" in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    script = httpx.get(f"{api.url}/console/static/js/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert httpx.get(f"{api.url}/console/session").status_code == 401
    # The API keeps its own, stricter policy.
    assert httpx.get(f"{api.url}/healthz").headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
