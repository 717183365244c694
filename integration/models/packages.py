"""Model packages into the registry: a package directory (or an uploaded archive of one) -> files in
object storage (`models/{name}/{version}/`) and the manifest in the `models` table.

The CLI (`doctorai models add`) and the admin API (`POST /admin/models`) both register through
`upload`; the inference workers read what it stored (integration.models.registry for the
manifest, inference.package_cache for the files).
"""

import io
import logging
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

from pydantic import ValidationError
from sqlalchemy import Engine

from integration.errors import (
    InvalidManifest,
    InvalidPackage,
    ModelConflict,
    UnsafeArchive,
)
from integration.models.manifest import Manifest
from storage.db import session_scope
from storage.objects import ObjectStore, model_key
from storage.model_packages import add_model_package, model_package
from storage.tables.pipeline import ModelPackage

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_CHUNK = 1024 * 1024


def read_package(path: Path) -> tuple[Manifest, Path]:
    """The manifest and artifact of a package directory (`manifest.json` beside the artifact)."""
    try:
        document = (path / MANIFEST).read_bytes()
    except OSError as exc:
        raise InvalidPackage(f"{path}: no {MANIFEST}: {exc}") from exc
    try:
        manifest = Manifest.model_validate_json(document)
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise InvalidManifest(f"{path}: {MANIFEST} does not validate: {exc}", errors=errors) from exc
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


def upload(
    engine: Engine, objects: ObjectStore, manifest: Manifest, artifact: Path, *, allow_legacy_format: bool = False
) -> ModelPackage:
    """Upload a package's files and register its manifest (inactive). Idempotent for the same manifest.

    `allow_legacy_format` is for the builtin packages only (our own code, `doctorai models add
    --builtin`): it allows their legacy artifact (integration.models.formats), also on a row
    registered before; an uploaded package is allowed by an admin, through the registry.
    """
    document = manifest.model_dump_json()
    with session_scope(engine) as session:
        row = model_package(session, name=manifest.name, version=manifest.version)
        if row is not None and Manifest.model_validate_json(row.manifest) != manifest:
            raise ModelConflict(f"{manifest.name} {manifest.version} is registered with another manifest; bump the version")
    # Files first, then the row: a registered version always has its files (DESIGN.md 5.1).
    present = objects.list_keys(model_key(manifest.name, manifest.version, ""))
    for name, path in _files(artifact).items():
        key = model_key(manifest.name, manifest.version, name)
        if present.get(key) != path.stat().st_size:  # a re-run skips what is there already
            objects.put_file(key, path)
    objects.put_bytes(model_key(manifest.name, manifest.version, MANIFEST), document.encode(), "application/json")
    with session_scope(engine) as session:
        row = model_package(session, name=manifest.name, version=manifest.version)
        if row is None:
            row = add_model_package(
                session,
                name=manifest.name,
                version=manifest.version,
                framework=manifest.framework,
                manifest=document,
                allow_legacy_format=allow_legacy_format,
            )
            log.info("registered %s %s (%s)", manifest.name, manifest.version, manifest.framework)
        elif allow_legacy_format:
            row.allow_legacy_format = True
        return row


def _member_path(into: Path, name: str) -> Path:
    """Where an archive member goes; UnsafeArchive for absolute names and `..` (the "zip slip")."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (posix.parts and posix.parts[0].endswith(":")):
        raise UnsafeArchive(f"archive member {name!r} would land outside the package directory")
    return into.joinpath(*posix.parts)


def _copy(source: IO[bytes], target: Path, budget: int) -> int:
    """Copy at most `budget` bytes; what was copied. Counts what is written, not what headers claim."""
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with target.open("wb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > budget:
                raise UnsafeArchive("the package unpacks to more bytes than the upload limit allows")
            out.write(chunk)
    return written


def _unzip(data: bytes, into: Path, max_bytes: int) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        budget = max_bytes
        for info in archive.infolist():
            target = _member_path(into, info.filename)
            # Unix mode in the high 16 bits of external_attr (APPNOTE 4.4.15): links are refused.
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchive(f"archive member {info.filename!r} is a symbolic link")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            with archive.open(info) as source:
                budget -= _copy(source, target, budget)


def _untar(data: bytes, into: Path, max_bytes: int) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        budget = max_bytes
        for member in archive:
            target = _member_path(into, member.name)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():  # symbolic and hard links, devices, FIFOs
                raise UnsafeArchive(f"archive member {member.name!r} is not a regular file")
            source = archive.extractfile(member)
            if source is None:
                raise UnsafeArchive(f"archive member {member.name!r} has no data")
            with source:
                budget -= _copy(source, target, budget)


def unpack(data: bytes, *, kind: str, into: Path, max_bytes: int) -> Path:
    """Unpack a package archive ("zip" or "tar.gz") into `into`; the directory holding manifest.json.

    Members are written one by one, never with extractall: absolute names, `..`, links and more
    than `max_bytes` unpacked raise UnsafeArchive. The manifest may sit at the top or in the one
    directory the archive holds (an archived package directory).
    """
    into.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "zip":
            _unzip(data, into, max_bytes)
        elif kind == "tar.gz":
            _untar(data, into, max_bytes)
        else:
            raise InvalidPackage(f"unknown archive kind {kind!r}")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise UnsafeArchive(f"not a readable {kind} archive: {exc}") from exc
    if (into / MANIFEST).is_file():
        return into
    entries = [p for p in into.iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and (entries[0] / MANIFEST).is_file():
        return entries[0]
    raise InvalidPackage(f"the archive holds no {MANIFEST} at its top or in its one directory")
