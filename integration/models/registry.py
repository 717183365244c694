"""The model registry's rules: which version of a model new jobs use.

A version is registered inactive (integration.models.packages). Activating it makes new jobs use
it (the router reads the active version) and the version active before it inactive; jobs already
queued finish on the version they name. Deactivating takes a version out of use until it is
activated again; retiring takes it out of use for good, so a retired version is never activated
again. Rolling back activates the version that was active before the current one.

Each rule works in the caller's transaction, so the admin API audits a change in the same one.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from integration.errors import LegacyFormatRefused, ModelNotFound, ModelRetired
from integration.heartbeats import HEALTHY_WITHIN
from integration.models.formats import legacy_format
from integration.models.manifest import Manifest
from integration.rules import load_rules
from storage.model_packages import (
    activate_model_package,
    active_model_version,
    deactivate_model_package,
    model_package,
    model_packages,
    retire_model_package,
)
from storage.heartbeats import live
from storage.tables.pipeline import ModelPackage

log = logging.getLogger(__name__)


def registered(session: Session, *, name: str, version: str) -> ModelPackage:
    """One registered version; ModelNotFound when it is not registered."""
    row = model_package(session, name=name, version=version)
    if row is None:
        raise ModelNotFound(f"{name} {version} is not registered")
    return row


def activate(session: Session, *, name: str, version: str) -> ModelPackage:
    """Make `version` the one new jobs of `name` use; ModelRetired when it is retired."""
    row = registered(session, name=name, version=version)
    if row.status == "retired":
        raise ModelRetired(f"{name} {version} is retired and cannot be activated")
    activate_model_package(session, row=row)
    log.info("activated %s %s", name, version)
    return row


def activate_first(session: Session, *, name: str, version: str) -> bool:
    """Activate `version` when no version of `name` was ever active (the model's first registration);
    whether it did. Once a version was activated, the site's choice stays: a version it deactivated,
    retired or replaced is left as it is."""
    if any(row.activated_at is not None for row in model_packages(session, name=name)):
        return False
    activate(session, name=name, version=version)
    return True


def deactivate(session: Session, *, name: str, version: str) -> None:
    """Take `version` out of use until it is activated again: new jobs of `name` find no active version."""
    deactivate_model_package(session, row=registered(session, name=name, version=version))


def retire(session: Session, *, name: str, version: str) -> None:
    """Take `version` out of use for good; its files stay, for the audit trail and queued jobs."""
    retire_model_package(session, row=registered(session, name=name, version=version))


def rollback(session: Session, *, name: str) -> str:
    """Activate the version that was active before the current one; returns it."""
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
        raise ModelNotFound(f"{name} has no earlier active version to roll back to")
    previous = max(earlier, key=lambda r: r.activated_at or r.uploaded_at)
    activate_model_package(session, row=previous)
    return previous.version


def active_version(session: Session, *, name: str) -> str:
    """The version new jobs of `name` use; ModelNotFound when none is active."""
    version = active_model_version(session, name=name)
    if version is None:
        raise ModelNotFound(f"{name} has no active version (doctorai models activate {name} VERSION)")
    return version


def manifest_of(session: Session, *, name: str, version: str) -> Manifest:
    """The registered manifest of one version."""
    return Manifest.model_validate_json(registered(session, name=name, version=version).manifest)


def runnable_manifest(session: Session, *, name: str, version: str) -> Manifest:
    """The manifest of a version a worker may load: LegacyFormatRefused when its artifact is in a
    legacy format (integration.models.formats) that no admin allowed for this version."""
    row = registered(session, name=name, version=version)
    manifest = Manifest.model_validate_json(row.manifest)
    why = legacy_format(manifest.framework, manifest.artifact)
    if why and not row.allow_legacy_format:
        raise LegacyFormatRefused(
            f"{name} {version} is not loaded: {why}; an admin may allow it for this version "
            f"(POST /admin/models/{name}/{version}/allow-legacy-format)"
        )
    return manifest


def allow_legacy(session: Session, *, name: str, version: str) -> ModelPackage:
    """Let workers load this version's legacy artifact; the admin API audits it in the same transaction."""
    row = registered(session, name=name, version=version)
    row.allow_legacy_format = True
    log.warning("%s %s: an admin allowed its legacy-format artifact to be loaded", name, version)
    return row


@dataclass(frozen=True)
class RuleWarning:
    """An enabled routing rule that runs a model nothing will run: studies it matches get no job."""

    rule: str
    model: str
    problem: str


def rule_warnings(session: Session, *, now: datetime) -> list[RuleWarning]:
    """Every enabled rule's model that is not registered, has no active version, or has no running
    worker (no healthy `inference-<model>` heartbeat): what `doctorai models list` and the console warn of."""
    statuses: dict[str, set[str]] = {}
    for row in model_packages(session):
        statuses.setdefault(row.name, set()).add(row.status)
    workers = {row.name for row in live(session, since=now - HEALTHY_WITHIN, kind="inference")}
    found = []
    for _, rule in load_rules(session):
        for model in dict.fromkeys(action.model for action in rule.run) if rule.enabled else ():
            if model not in statuses:
                problem = "not registered"
            elif "active" not in statuses[model]:
                problem = "no active version"
            elif f"inference-{model}" not in workers:
                problem = "no worker running"
            else:
                continue
            found.append(RuleWarning(rule=rule.name, model=model, problem=problem))
    return found
