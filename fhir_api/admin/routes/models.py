"""/admin/models: the model registry (issue 6). Packages are uploaded here as an archive or with
`doctorai models add` (both through integration.models.packages), listed, activated, deactivated
and retired by the registry's rules (integration.models.registry, which the CLI uses too).

Activating a version makes new jobs use it (the router reads the active version); jobs already
queued finish on the version they name. A retired version cannot be activated again (409).
"""

import json
import tempfile
from collections.abc import Callable
from collections import Counter
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from sqlalchemy.orm import Session

from audit.records import ADMIN_CONFIGURATION, SOFTWARE_CONFIGURATION
from fhir_api.admin.access import ActorDep, audit_change
from fhir_api.admin.paging import Page, Paging, page_of, sorted_by
from fhir_api.deps import BodyDep, EngineDep, ObjectStoreDep, SettingsDep
from fhir_api.errors import InvalidState, NotFound, UnsupportedMediaType
from integration.errors import InvalidManifest
from integration.heartbeats import HEALTHY_WITHIN
from integration.models import registry
from integration.models.formats import legacy_format
from integration.models.packages import read_package, unpack, upload
from storage.db import read_scope, session_scope
from storage.heartbeats import live
from storage.model_packages import model_package, model_packages
from storage.tables.pipeline import ModelPackage

router = APIRouter(prefix="/models", tags=["models"])

# Media types of a package archive: zip (IANA application/zip) or gzip-compressed tar (RFC 6713
# application/gzip), with the names older clients send.
ARCHIVE_TYPES = {
    "application/zip": "zip",
    "application/x-zip-compressed": "zip",
    "application/gzip": "tar.gz",
    "application/x-gzip": "tar.gz",
    "application/x-tar+gzip": "tar.gz",
}
_ARCHIVE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The package directory (manifest.json and the artifact) as a zip or tar.gz archive.",
        "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in ARCHIVE_TYPES},
    }
}


class ModelVersion(BaseModel):
    """One registered version of a model package."""

    version: str
    framework: str
    status: str  # active | inactive | retired
    uploaded_at: datetime
    activated_at: datetime | None
    manifest: dict[str, Any]
    # Why the artifact is a legacy format whose loading runs code ("" when it is not), and whether
    # an admin allowed workers to load it (integration.models.formats).
    legacy_format: str = ""
    allow_legacy_format: bool = False


class ModelOut(BaseModel):
    """A model and its versions, oldest upload first, and how many workers run it now."""

    name: str
    active_version: str | None
    versions: list[ModelVersion]
    workers: int = 0


def _model(name: str, rows: list[ModelPackage], workers: int = 0) -> ModelOut:
    return ModelOut(
        name=name,
        workers=workers,
        active_version=next((r.version for r in rows if r.status == "active"), None),
        versions=[
            ModelVersion(
                version=r.version,
                framework=r.framework,
                status=r.status,
                uploaded_at=r.uploaded_at,
                activated_at=r.activated_at,
                manifest=json.loads(r.manifest),
                legacy_format=legacy_format(r.framework, str(json.loads(r.manifest).get("artifact", ""))),
                allow_legacy_format=r.allow_legacy_format,
            )
            for r in rows
        ],
    )


def _statuses(session: Session, name: str) -> dict[str, str]:
    return {r.version: r.status for r in model_packages(session, name=name)}


def _workers(session: Session) -> Counter[str]:
    """Running workers per model (healthy inference heartbeats, named inference-<model>)."""
    since = datetime.now(UTC) - HEALTHY_WITHIN
    return Counter(row.name.removeprefix("inference-") for row in live(session, since=since, kind="inference"))


_SORTS = ("name", "active_version", "workers")


@router.get("")
def list_models(engine: EngineDep, paging: Annotated[Paging, Depends(sorted_by(_SORTS))]) -> Page[ModelOut]:
    """The registered models with their versions and running workers, by name unless sorted otherwise."""
    with read_scope(engine) as session:
        rows = model_packages(session)
        workers = _workers(session)
    found = [_model(name, list(group), workers[name]) for name, group in groupby(rows, key=lambda r: r.name)]
    return page_of(found, paging, getattr)


@router.post("", status_code=201, openapi_extra=_ARCHIVE_BODY)
def upload_model(
    body: BodyDep,
    engine: EngineDep,
    objects: ObjectStoreDep,
    settings: SettingsDep,
    actor: ActorDep,
    content_type: Annotated[str, Header()] = "",
) -> ModelOut:
    """Register a model package sent as the raw request body, inactive; activate it separately.

    The body is the archive itself (not multipart) with Content-Type application/zip or
    application/gzip (a .tar.gz); manifest.json sits at its top or in its one directory.
    Answers 201 with the model's versions; 415 for another Content-Type; 400 for an archive that
    cannot be unpacked safely (absolute paths, `..`, links, over `model_upload_max_bytes`);
    422 with the manifest's validation errors, or when the artifact is missing; 409 when this
    name and version are registered already.
    """
    kind = ARCHIVE_TYPES.get(content_type.split(";")[0].strip().lower())
    if kind is None:
        raise UnsupportedMediaType(f"send the package as {' or '.join(ARCHIVE_TYPES)}, not {content_type!r}")
    with tempfile.TemporaryDirectory(prefix="model-upload-") as scratch:
        root = unpack(body, kind=kind, into=Path(scratch) / "package", max_bytes=settings.model_upload_max_bytes)
        try:
            manifest, artifact = read_package(root)
        except InvalidManifest as exc:
            raise RequestValidationError([{**e, "loc": ["body", "manifest.json", *e["loc"]]} for e in exc.errors]) from exc
        with session_scope(engine) as session:
            if model_package(session, name=manifest.name, version=manifest.version) is not None:
                raise InvalidState(f"{manifest.name} {manifest.version} is registered already; bump the version")
        upload(engine, objects, manifest, artifact)
    with session_scope(engine) as session:
        audit_change(
            session,
            actor,
            hop=ADMIN_CONFIGURATION,
            before=None,
            after={"model": manifest.name, "version": manifest.version, "framework": manifest.framework},
            detail={
                "alert_type": SOFTWARE_CONFIGURATION,
                "model": manifest.name,
                "version": manifest.version,
                "action": "upload",
            },
        )
        return _model(manifest.name, model_packages(session, name=manifest.name))


@router.get("/{name}")
def read_model(name: str, engine: EngineDep) -> ModelOut:
    """One model's versions and running workers."""
    with read_scope(engine) as session:
        rows = model_packages(session, name=name)
        workers = _workers(session)[name]
    if not rows:
        raise NotFound(f"no model {name} is registered")
    return _model(name, rows, workers)


# Each action is the registry's rule (integration.models.registry); an unknown version is 404
# and activating a retired one 409 (fhir_api/admin/problems.py).
_ACTIONS: dict[str, Callable[..., object]] = {
    "activate": registry.activate,
    "deactivate": registry.deactivate,
    "retire": registry.retire,
}


def _change(name: str, version: str, action: str, engine: EngineDep, actor: ActorDep) -> ModelOut:
    with session_scope(engine) as session:
        before = _statuses(session, name)
        _ACTIONS[action](session, name=name, version=version)
        after = _statuses(session, name)
        audit_change(
            session,
            actor,
            hop=ADMIN_CONFIGURATION,
            before={"versions": before},
            after={"versions": after},
            detail={"alert_type": SOFTWARE_CONFIGURATION, "model": name, "version": version, "action": action},
        )
        return _model(name, model_packages(session, name=name))


@router.post("/{name}/{version}/activate")
def activate_model(name: str, version: str, engine: EngineDep, actor: ActorDep) -> ModelOut:
    """Make this version the one new jobs of the model use (409 when it is retired)."""
    return _change(name, version, "activate", engine, actor)


@router.post("/{name}/{version}/deactivate")
def deactivate_model(name: str, version: str, engine: EngineDep, actor: ActorDep) -> ModelOut:
    """Take this version out of use until it is activated again; new jobs of the model find no version."""
    return _change(name, version, "deactivate", engine, actor)


@router.post("/{name}/rollback")
def rollback_model(name: str, engine: EngineDep, actor: ActorDep) -> ModelOut:
    """Activate the version that was active before the current one (404 when there is none)."""
    with session_scope(engine) as session:
        before = _statuses(session, name)
        version = registry.rollback(session, name=name)
        audit_change(
            session,
            actor,
            hop=ADMIN_CONFIGURATION,
            before={"versions": before},
            after={"versions": _statuses(session, name)},
            detail={"alert_type": SOFTWARE_CONFIGURATION, "model": name, "version": version, "action": "rollback"},
        )
        return _model(name, model_packages(session, name=name))


@router.post("/{name}/{version}/allow-legacy-format")
def allow_legacy_format(name: str, version: str, engine: EngineDep, actor: ActorDep) -> ModelOut:
    """Let workers load this version's legacy-format artifact (Keras .h5, TorchScript), whose loading
    runs the package's code: allow it only for a package whose origin you trust. Audited.

    404 for an unknown version; 409 when its artifact is not in a legacy format (nothing to allow).
    """
    with session_scope(engine) as session:
        row = registry.registered(session, name=name, version=version)
        why = legacy_format(row.framework, str(json.loads(row.manifest).get("artifact", "")))
        if not why:
            raise InvalidState(f"{name} {version} is not in a legacy format; it loads without this")
        before = row.allow_legacy_format
        registry.allow_legacy(session, name=name, version=version)
        audit_change(
            session,
            actor,
            hop=ADMIN_CONFIGURATION,
            before={"allow_legacy_format": before},
            after={"allow_legacy_format": True},
            detail={
                "alert_type": SOFTWARE_CONFIGURATION,
                "model": name,
                "version": version,
                "action": "allow-legacy-format",
                "legacy_format": why,
            },
        )
        return _model(name, model_packages(session, name=name))


@router.post("/{name}/{version}/retire")
def retire_model(name: str, version: str, engine: EngineDep, actor: ActorDep) -> ModelOut:
    """Take this version out of use for good; its files stay for the audit trail and queued jobs."""
    return _change(name, version, "retire", engine, actor)
