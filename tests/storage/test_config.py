"""Production mode refuses default or empty secrets, in every process."""

import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from storage.config import (
    ProductionConfigError,
    StorageSettings,
    check_production,
    check_signing_key,
    is_placeholder,
)


def test_production_needs_object_store_keys_of_its_own() -> None:
    check_production(StorageSettings(env="development"))  # the local stack's keys are fine on a laptop
    for access, secret, named in [
        ("doctorai-local", "a-real-secret", "DOCTORAI_S3_ACCESS_KEY"),
        ("", "a-real-secret", "DOCTORAI_S3_ACCESS_KEY"),
        ("site-key", "doctorai-local-secret", "DOCTORAI_S3_SECRET_KEY"),
        ("site-key", "", "DOCTORAI_S3_SECRET_KEY"),
    ]:
        with pytest.raises(ProductionConfigError, match=named):
            check_production(StorageSettings(env="production", s3_access_key=access, s3_secret_key=secret))
    check_production(StorageSettings(env="production", s3_access_key="site-key", s3_secret_key="a-real-secret"))


@pytest.mark.parametrize(
    "module",
    ["dicom_listener", "integration", "fhir_api", "results", "hl7_listener", "fhir_api.subscriptions", "inference"],
)
def test_every_process_refuses_to_start(module: str) -> None:
    env = {"DOCTORAI_ENV": "production", "DOCTORAI_JWT_SECRET": "x" * 40, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "refusing to start" in done.stderr and "DOCTORAI_S3_ACCESS_KEY" in done.stderr, done.stderr[-2000:]


def _shipped_secrets() -> dict[str, str]:
    """Every secret-looking value shipped in deploy/ (issue 18): env.example and the example Secrets."""
    import yaml

    deploy = Path(__file__).resolve().parents[2] / "deploy"
    found: dict[str, str] = {}
    for line in (deploy / "env.example").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            found[f"env.example {key}"] = value
    for doc in yaml.safe_load_all((deploy / "k8s/secret.example.yaml").read_text()):
        for key, value in (doc or {}).get("stringData", {}).items():
            found[f"{doc['metadata']['name']} {key}"] = value
    return {k: v for k, v in found.items() if any(w in k for w in ("PASSWORD", "SECRET", "DATABASE_URL"))}


def test_every_placeholder_shipped_in_deploy_is_refused() -> None:
    shipped = _shipped_secrets()
    assert len(shipped) >= 8, shipped
    site = {"s3_access_key": "site-key", "s3_secret_key": "a-real-secret"}
    for where, value in shipped.items():
        if "DATABASE_URL" in where:
            with pytest.raises(ProductionConfigError, match="DOCTORAI_DATABASE_URL"):
                check_production(StorageSettings(env="production", database_url=value, **site))
            continue
        assert is_placeholder(value), where
        with pytest.raises(ProductionConfigError, match="DOCTORAI_S3_SECRET_KEY"):
            check_production(StorageSettings(env="production", s3_access_key="site-key", s3_secret_key=value))
        with pytest.raises(ProductionConfigError, match="DOCTORAI_JWT_SECRET"):
            check_signing_key("DOCTORAI_JWT_SECRET", value)
    check_production(StorageSettings(env="production", database_url="postgresql://doctorai:Xk4v-real@db/doctorai", **site))


def test_signing_keys_need_length_and_entropy() -> None:
    for weak in ["x" * 40, "ab" * 20, "0123456789abcdef" * 2, "passwordpasswordpasswordpassword", "short-but-random-Q7"]:
        with pytest.raises(ProductionConfigError, match="at least 32 bytes"):
            check_signing_key("DOCTORAI_AUDIT_KEY", weak)
    check_signing_key("DOCTORAI_AUDIT_KEY", secrets.token_urlsafe(32))
    check_signing_key("DOCTORAI_AUDIT_KEY", secrets.token_hex(32))

