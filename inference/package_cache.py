"""The worker's local copies of registered package versions: downloaded from object storage
(`models/{name}/{version}/`) once, then reused. What a version is and which one is active is the
registry's (integration.models.registry)."""

import logging
import shutil
import tempfile
from pathlib import Path

from inference.errors import UnknownModel
from storage.objects import ObjectStore, model_key

log = logging.getLogger(__name__)

# Written last into a local copy, so a half-downloaded package is never taken for a whole one.
COMPLETE = ".complete"


def fetch(objects: ObjectStore, cache: Path, name: str, version: str) -> Path:
    """A local copy of a package's files (downloaded once, then reused); returns its directory."""
    local = cache / name / version
    if (local / COMPLETE).is_file():
        return local
    prefix = model_key(name, version, "")
    keys = objects.list_keys(prefix)
    if not keys:
        raise UnknownModel(f"no files under {prefix} in object storage")
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-{version}-", dir=cache))
    try:
        for key in keys:
            target = staging / key.removeprefix(prefix)
            target.parent.mkdir(parents=True, exist_ok=True)
            objects.get_file(key, target)
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
