"""The model registry: package files in object storage (`models/{name}/{version}/`), manifests in the
`models` table; and the adapter module of each framework (a plain dict).

A version is uploaded inactive; activating it makes new jobs use it (the router reads the active
version); jobs already queued finish on the version they name. Rolling back activates the version
that was active before; retiring takes a version out of use for good.
"""

import importlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import cast

from sqlalchemy import Engine

from inference.adapters import Adapter
from inference.errors import InvalidPackage, ModelConflict, ModelRetired, UnknownModel
from inference.manifest import Manifest
from storage.db import session_scope
from storage.objects import ObjectStore, model_key
from storage.queries import (
    activate_model_package,
    active_model_version,
    add_model_package,
    model_package,
    model_packages,
    retire_model_package,
)
from storage.tables import ModelPackage

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# Written last into a local copy, so a half-downloaded package is never taken for a whole one.
COMPLETE = ".complete"

# Module path per framework, imported on demand so a worker loads only its own framework.
ADAPTERS: dict[str, str] = {
    "keras": "inference.adapters.keras",
    "torch": "inference.adapters.torch",
    "onnx": "inference.adapters.onnx",
    "transformers": "inference.adapters.transformers",
    "xgboost": "inference.adapters.xgboost",
}


def adapter_for(framework: str) -> Adapter:
    """Import the adapter module of a framework (and so the framework) now, not before."""
    try:
        module = ADAPTERS[framework]
    except KeyError:
        raise UnknownModel(f"no adapter for framework {framework!r}") from None
    return cast(Adapter, importlib.import_module(module))


def read_package(path: Path) -> tuple[Manifest, Path]:
    """The manifest and artifact of a package directory (`manifest.json` beside the artifact)."""
    try:
        manifest = Manifest.model_validate_json((path / MANIFEST).read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidPackage(f"{path}: no valid {MANIFEST}: {exc}") from exc
    artifact = path / manifest.artifact
    if not artifact.exists():
        raise InvalidPackage(f"{path}: artifact {manifest.artifact} is missing")
    return manifest, artifact


def _files(artifact: Path) -> dict[str, Path]:
    """Package-relative names of the artifact's files (one file, or every file of a directory)."""
    if artifact.is_file():
        return {artifact.name: artifact}
    return {
        f"{artifact.name}/{p.relative_to(artifact).as_posix()}": p
        for p in sorted(artifact.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def upload(engine: Engine, store: ObjectStore, manifest: Manifest, artifact: Path) -> ModelPackage:
    """Upload a package's files and register its manifest (inactive). Idempotent for the same manifest."""
    document = manifest.model_dump_json()
    with session_scope(engine) as session:
        row = model_package(session, name=manifest.name, version=manifest.version)
        if row is not None and Manifest.model_validate_json(row.manifest) != manifest:
            raise ModelConflict(f"{manifest.name} {manifest.version} is registered with another manifest; bump the version")
    # Files first, then the row: a registered version always has its files (DESIGN.md 5.1).
    present = store.list_keys(model_key(manifest.name, manifest.version, ""))
    for name, path in _files(artifact).items():
        key = model_key(manifest.name, manifest.version, name)
        if present.get(key) != path.stat().st_size:  # a re-run skips what is there already
            store.put_file(key, path)
    store.put_bytes(model_key(manifest.name, manifest.version, MANIFEST), document.encode(), "application/json")
    with session_scope(engine) as session:
        row = model_package(session, name=manifest.name, version=manifest.version)
        if row is None:
            row = add_model_package(
                session, name=manifest.name, version=manifest.version, framework=manifest.framework, manifest=document
            )
            log.info("registered %s %s (%s)", manifest.name, manifest.version, manifest.framework)
        return row


def activate(engine: Engine, name: str, version: str) -> None:
    """Make `version` the one new jobs of `name` use."""
    with session_scope(engine) as session:
        row = model_package(session, name=name, version=version)
        if row is None:
            raise UnknownModel(f"{name} {version} is not registered")
        if row.status == "retired":
            raise ModelRetired(f"{name} {version} is retired")
        activate_model_package(session, row=row)
    log.info("activated %s %s", name, version)


def ensure_active(engine: Engine, name: str, version: str) -> None:
    """Activate `version` unless some version of `name` is active already (a site's choice stays)."""
    with session_scope(engine) as session:
        if active_model_version(session, name=name) is not None:
            return
    activate(engine, name, version)


def rollback(engine: Engine, name: str) -> str:
    """Activate the version that was active before the current one; returns it."""
    with session_scope(engine) as session:
        rows = model_packages(session, name=name)
        current = next((r for r in rows if r.status == "active"), None)
        earlier = [
            r
            for r in rows
            if r.status == "inactive"
            and r.activated_at is not None
            and (current is None or current.activated_at is None or r.activated_at < current.activated_at)
        ]
        if not earlier:
            raise UnknownModel(f"{name} has no earlier active version to roll back to")
        previous = max(earlier, key=lambda r: r.activated_at or r.uploaded_at)
        activate_model_package(session, row=previous)
        return previous.version


def retire(engine: Engine, name: str, version: str) -> None:
    """Take a version out of use for good; its files stay, for the audit trail and queued jobs."""
    with session_scope(engine) as session:
        row = model_package(session, name=name, version=version)
        if row is None:
            raise UnknownModel(f"{name} {version} is not registered")
        retire_model_package(session, row=row)


def registered(engine: Engine, name: str = "") -> list[ModelPackage]:
    """Every registered version (of one name, or all)."""
    with session_scope(engine) as session:
        return model_packages(session, name=name)


def manifest_of(engine: Engine, name: str, version: str) -> Manifest:
    """The registered manifest of one version."""
    with session_scope(engine) as session:
        row = model_package(session, name=name, version=version)
        if row is None:
            raise UnknownModel(f"{name} {version} is not registered")
        return Manifest.model_validate_json(row.manifest)


def active_version(engine: Engine, name: str) -> str:
    """The active version of `name`."""
    with session_scope(engine) as session:
        version = active_model_version(session, name=name)
    if version is None:
        raise UnknownModel(f"{name} has no active version (doctorai models activate {name} VERSION)")
    return version


def fetch(store: ObjectStore, cache: Path, name: str, version: str) -> Path:
    """A local copy of a package's files (downloaded once, then reused); returns its directory."""
    local = cache / name / version
    if (local / COMPLETE).is_file():
        return local
    prefix = model_key(name, version, "")
    keys = store.list_keys(prefix)
    if not keys:
        raise UnknownModel(f"no files under {prefix} in object storage")
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-{version}-", dir=cache))
    try:
        for key in keys:
            target = staging / key.removeprefix(prefix)
            target.parent.mkdir(parents=True, exist_ok=True)
            store.get_file(key, target)
        (staging / COMPLETE).touch()
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(local)
        except OSError:
            if not (local / COMPLETE).is_file():  # another worker did not finish it either: take ours
                shutil.rmtree(local, ignore_errors=True)
                staging.rename(local)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("fetched %s %s (%d files) into %s", name, version, len(keys), local)
    return local
