"""Production mode refuses default or empty secrets, in every process."""

import subprocess
import sys

import pytest

from storage.config import ProductionConfigError, StorageSettings, check_production


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
