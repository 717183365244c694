"""`doctorai users`: people added, listed, given a new password, unlocked and removed, each change audited;
refusals are one line on stderr and a non-zero exit."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from fhir_api.auth.users import LockOut, SignInRefused, authenticate
from storage.db import make_engine, migrate, session_scope
from storage.tables.access import User
from storage.tables.audit import AuditEvent

PASSWORD = "a long enough passphrase"


def test_doctorai_users(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'doctorai.db'}"
    migrate(url)
    env = {**os.environ, "DOCTORAI_DATABASE_URL": url, "DOCTORAI_VAR_DIR": str(tmp_path)}

    def users(*args: str, password: str = "") -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "doctorai.cli", "users", *args]
        return subprocess.run(argv, input=password + "\n", env=env, capture_output=True, text=True, timeout=60)

    added = users("add", "ada", "--role", "admin", "--password-stdin", password=PASSWORD)
    assert added.returncode == 0 and added.stdout.strip() == "ada added with role admin", added.stderr
    short = users("add", "bob", "--role", "operator", "--password-stdin", password="short")
    assert short.returncode == 1 and short.stderr.strip() == "doctorai users add: a password has at least 12 characters"
    again = users("add", "ada", "--role", "auditor", "--password-stdin", password=PASSWORD)
    assert again.returncode == 1 and "exists already" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert users("list").stdout.split()[:3] == ["ada", "admin", "active"]

    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            user = session.get_one(User, "ada")
            assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
            for _ in range(2):
                with pytest.raises(SignInRefused):
                    authenticate(session, name="ada", password="wrong", lockout=LockOut(failures=2, seconds=600), now=user.created_at)
        assert "locked" in users("list").stdout
        assert users("unlock", "ada").stdout.strip() == "ada unlocked"
        assert "active" in users("list").stdout
        changed = users("passwd", "ada", "--password-stdin", password="another long passphrase")
        assert changed.returncode == 0 and "password changed" in changed.stdout
        assert users("remove", "ada").stdout.strip() == "ada removed"
        missing = users("remove", "ada")
        assert missing.returncode == 1 and missing.stderr.strip() == "doctorai users remove: no user ada"
        with session_scope(engine) as session:
            changes = list(session.scalars(select(AuditEvent.detail).where(AuditEvent.subtype == "admin-security")))
        assert [c["change"] for c in changes] == ["added with role admin", "unlocked", "password changed", "removed"]
    finally:
        engine.dispose()
