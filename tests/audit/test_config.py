"""The audit settings in production mode (issue 18): a key, when set, must be one worth having."""

import secrets

import pytest

from audit.config import AuditSettings
from audit.config import check_production as check_audit
from storage.config import ProductionConfigError, StorageSettings, exit_if_unsafe


def test_a_weak_audit_key_is_refused_in_production() -> None:
    production = StorageSettings(env="production", s3_access_key="site-key", s3_secret_key="a-real-secret")
    check_audit(AuditSettings(), production)  # no key: the hash chain alone
    check_audit(AuditSettings(audit_key="short"), StorageSettings())  # a laptop
    for weak in ("short", "change-me-to-a-random-string-of-at-least-32-bytes", "k" * 40):
        with pytest.raises(ProductionConfigError, match="DOCTORAI_AUDIT_KEY"):
            check_audit(AuditSettings(audit_key=weak), production)
    check_audit(AuditSettings(audit_key=secrets.token_urlsafe(32)), production)
    with pytest.raises(SystemExit, match="refusing to start: DOCTORAI_AUDIT_KEY"):
        exit_if_unsafe(production, lambda: check_audit(AuditSettings(audit_key="short"), production))
