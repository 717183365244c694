"""The model registry: package files in object storage (`models/{name}/{version}/`), manifests in the
`models` table; and the adapter module of each framework (a plain dict). Packages come in through
integration.model_packages (the CLI and the admin API).

A version is uploaded inactive; activating it makes new jobs use it (the router reads the active
version); jobs already queued finish on the version they name. Rolling back activates the version
that was active before; retiring takes a version out of use for good.
"""

import logging
import shutil
import tempfile
from pathlib import Path

from sqlalchemy import Engine

from inference.errors import ModelRetired, UnknownModel
from integration.manifest import Manifest
from storage.db import session_scope
from storage.objects import ObjectStore, model_key
from storage.queries import (
    activate_model_package,
    active_model_version,
    model_package,
    model_packages,
    retire_model_package,
)
from storage.tables import ModelPackage

log = logging.getLogger(__name__)

# Written last into a local copy, so a half-downloaded package is never taken for a whole one.
COMPLETE = ".complete"

# Module path per framework, imported only in a model's runner process (inference.runner): the
# worker process itself never loads a framework.
ADAPTERS: dict[str, str] = {
    "keras": "inference.adapters.keras",
    "torch": "inference.adapters.torch",
    "onnx": "inference.adapters.onnx",
    "transformers": "inference.adapters.transformers",
    "xgboost": "inference.adapters.xgboost",
}


def adapter_module(framework: str) -> str:
    """The name of a framework's adapter module (an inference.adapters.Adapter), not imported here."""
    try:
        return ADAPTERS[framework]
    except KeyError:
        raise UnknownModel(f"no adapter for framework {framework!r}") from None


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
