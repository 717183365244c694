"""The model registry on the real local object store (rclone S3) and SQLite: upload, activate,
roll back, retire, a worker's local copy; and the `doctorai models` command driving it."""

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from doctorai.stack import StackConfig, engine_env
from inference import package_cache
from integration.errors import InvalidPackage, LegacyFormatRefused, ModelConflict, ModelNotFound, ModelRetired
from integration.messages import Coding
from integration.models import packages, registry
from integration.models.manifest import Accepts, Manifest, OutputLabel, Preprocessing
from storage.db import make_engine, migrate, session_scope
from storage.heartbeats import beat
from storage.model_packages import active_model_names, add_model_package, model_packages
from storage.objects import ObjectStore, make_object_store

CONCEPT = Coding(system="http://snomed.info/sct", code="233604007", display="Pneumonia (disorder)")


def manifest(name: str, version: str, artifact: str = "model.onnx") -> Manifest:
    return Manifest(
        name=name,
        version=version,
        framework="onnx",
        task="classification",
        accepts=Accepts(modalities=["CR"]),
        preprocessing=Preprocessing(size=(4, 4)),
        outputs=[OutputLabel(index=0, concept=CONCEPT)],
        report_code=Coding(system="http://loinc.org", code="18748-4", display="Diagnostic imaging study"),
        report_category=Coding(system="http://terminology.hl7.org/CodeSystem/v2-0074", code="RAD", display="Radiology"),
        artifact=artifact,
    )


def package(tmp_path: Path, m: Manifest, payload: bytes = b"weights") -> Path:
    path = tmp_path / f"{m.name}-{m.version}"
    path.mkdir()
    (path / "manifest.json").write_text(m.model_dump_json())
    (path / m.artifact).write_bytes(payload)
    return path


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(services: StackConfig) -> ObjectStore:
    return make_object_store(services.storage_settings())


@pytest.mark.stack
def test_upload_activate_rollback_retire_and_fetch(tmp_path: Path, engine: Engine, store: ObjectStore) -> None:
    name = f"tiny-{uuid.uuid4().hex[:8]}"
    v1, v2 = manifest(name, "1.0.0"), manifest(name, "1.1.0")
    for m in (v1, v2):
        packages.upload(engine, store, *packages.read_package(package(tmp_path, m, m.version.encode())))
    packages.upload(engine, store, *packages.read_package(tmp_path / f"{name}-1.0.0"))  # again: no change

    with session_scope(engine) as session:
        assert [(r.version, r.status) for r in model_packages(session, name=name)] == [("1.0.0", "inactive"), ("1.1.0", "inactive")]
        with pytest.raises(ModelNotFound):
            registry.active_version(session, name=name)
        assert registry.activate_first(session, name=name, version="1.0.0")
        assert not registry.activate_first(session, name=name, version="1.1.0")  # one is active already: no change
        assert registry.active_version(session, name=name) == "1.0.0"
    with session_scope(engine) as session:
        registry.activate(session, name=name, version="1.1.0")
        assert registry.active_version(session, name=name) == "1.1.0"
        assert [r.status for r in model_packages(session, name=name)] == ["inactive", "active"]
    with session_scope(engine) as session:
        assert registry.rollback(session, name=name) == "1.0.0"
        assert registry.active_version(session, name=name) == "1.0.0"

    with session_scope(engine) as session:
        registry.retire(session, name=name, version="1.1.0")
        with pytest.raises(ModelRetired):
            registry.activate(session, name=name, version="1.1.0")
        with pytest.raises(ModelNotFound):
            registry.rollback(session, name=name)  # the only earlier version is retired
    with pytest.raises(ModelConflict):
        packages.upload(engine, store, v1.model_copy(update={"clinical_use": True}), tmp_path / f"{name}-1.0.0" / "model.onnx")

    # A worker's local copy: downloaded once, the same files, reused afterwards.
    local = package_cache.fetch(store, tmp_path / "cache", name, "1.1.0")
    assert (local / "model.onnx").read_bytes() == b"1.1.0"
    assert Manifest.model_validate_json((local / "manifest.json").read_text()) == v2
    assert package_cache.fetch(store, tmp_path / "cache", name, "1.1.0") == local
    with session_scope(engine) as session:
        assert registry.manifest_of(session, name=name, version="1.1.0") == v2


def test_only_a_models_first_version_is_activated_on_its_own(engine: Engine) -> None:
    """`doctorai up` activates a builtin when it is first registered; a version the site deactivated stays so."""
    with session_scope(engine) as session:
        add_model_package(session, name="m", version="1", framework="onnx", manifest=manifest("m", "1").model_dump_json())
        assert registry.activate_first(session, name="m", version="1")
        assert active_model_names(session) == ["m"]
        registry.deactivate(session, name="m", version="1")
        assert not registry.activate_first(session, name="m", version="1")  # the next start-up
        assert active_model_names(session) == []


def test_a_directory_without_a_valid_manifest_or_artifact_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidPackage):
        packages.read_package(tmp_path)
    (tmp_path / "manifest.json").write_text(manifest("x", "1").model_dump_json())
    with pytest.raises(InvalidPackage):
        packages.read_package(tmp_path)  # model.onnx missing


@pytest.mark.stack
def test_doctorai_models_command(tmp_path: Path, services: StackConfig) -> None:
    config = StackConfig(var_dir=tmp_path / "var", ports=services.ports)
    (tmp_path / "var").mkdir()
    env = {**os.environ, **engine_env(config)}
    migrate(env["DOCTORAI_DATABASE_URL"])
    name = f"cli-{uuid.uuid4().hex[:8]}"
    doctorai = [sys.executable, "-m", "doctorai.cli", "models"]

    def run(*args: str) -> str:
        done = subprocess.run([*doctorai, *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("add", str(package(tmp_path, manifest(name, "2.0.0"))), "--activate")
    run("add", str(package(tmp_path, manifest(name, "2.1.0"))))
    listed = run("list", name).splitlines()
    assert [line.split()[1:4] for line in listed] == [["2.0.0", "onnx", "active"], ["2.1.0", "onnx", "inactive"]]
    run("activate", name, "2.1.0")
    assert "2.0.0 active" in run("rollback", name)
    run("retire", name, "2.1.0")
    refused = subprocess.run([*doctorai, "activate", name, "2.1.0"], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "retired" in refused.stderr


def test_rule_warnings_name_models_nothing_will_run(engine: Engine) -> None:
    """Issue 16: an enabled rule whose model is not registered, has no active version or no worker."""
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        # The migration seeds four rules; none of their models is registered yet.
        problems = {(w.model, w.problem) for w in registry.rule_warnings(session, now=now)}
        assert ("chest-xray-pneumonia", "not registered") in problems and len(problems) == 4
        add_model_package(session, name="chest-xray-pneumonia", version="1", framework="keras", manifest="{}")
        assert ("chest-xray-pneumonia", "no active version") in {(w.model, w.problem) for w in registry.rule_warnings(session, now=now)}
        registry.activate(session, name="chest-xray-pneumonia", version="1")
        assert ("chest-xray-pneumonia", "no worker running") in {(w.model, w.problem) for w in registry.rule_warnings(session, now=now)}
        beat(session, kind="inference", name="inference-chest-xray-pneumonia", host="h", pid=1, version="", started_at=now, now=now, detail={})
        assert "chest-xray-pneumonia" not in {w.model for w in registry.rule_warnings(session, now=now)}
        # A worker that stopped beating is no worker.
        later = now + timedelta(minutes=1)
        assert "chest-xray-pneumonia" in {w.model for w in registry.rule_warnings(session, now=later)}


@pytest.mark.stack
def test_doctorai_models_list_warns_of_rules_that_cannot_run(tmp_path: Path, services: StackConfig) -> None:
    config = StackConfig(var_dir=tmp_path / "var", ports=services.ports)
    (tmp_path / "var").mkdir()
    env = {**os.environ, **engine_env(config)}
    migrate(env["DOCTORAI_DATABASE_URL"])
    done = subprocess.run([sys.executable, "-m", "doctorai.cli", "models", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "warning: rule chest-radiographs-to-pneumonia-model runs chest-xray-pneumonia: not registered" in done.stderr


@pytest.mark.stack
def test_a_builtin_torchscript_package_is_allowed_an_uploaded_one_is_not(tmp_path: Path, engine: Engine, store: ObjectStore) -> None:
    name = f"torch-{uuid.uuid4().hex[:8]}"
    m = manifest(name, "1.0.0", artifact="model.pt").model_copy(update={"framework": "torch"})
    packages.upload(engine, store, *packages.read_package(package(tmp_path, m)))
    with session_scope(engine) as session, pytest.raises(LegacyFormatRefused, match="TorchScript"):
        registry.runnable_manifest(session, name=name, version="1.0.0")
    # `doctorai models add --builtin` registers our own packages again, allowing their format.
    packages.upload(engine, store, m, tmp_path / f"{name}-1.0.0" / "model.pt", allow_legacy_format=True)
    with session_scope(engine) as session:
        assert registry.runnable_manifest(session, name=name, version="1.0.0") == m
