"""The model registry's rows: registered package versions, and which version of each name is active.

The rules over them (a retired version is never activated again, roll back) are
integration.models.registry's; these functions only read and write rows.
"""

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.tables.pipeline import ModelPackage


def model_packages(session: Session, *, name: str = "") -> list[ModelPackage]:
    """Registered model package versions (of one name, or all), by name then upload time."""
    stmt = select(ModelPackage).order_by(ModelPackage.name, ModelPackage.uploaded_at, ModelPackage.version)
    if name:
        stmt = stmt.where(ModelPackage.name == name)
    return list(session.scalars(stmt))


def model_package(session: Session, *, name: str, version: str) -> ModelPackage | None:
    """One registered version, or None."""
    return session.get(ModelPackage, (name, version))


def active_model_version(session: Session, *, name: str) -> str | None:
    """The version new jobs of model `name` use, or None when no version is active."""
    stmt = select(ModelPackage.version).where(ModelPackage.name == name, ModelPackage.status == "active")
    return session.scalar(stmt.limit(1))


def active_model_names(session: Session) -> list[str]:
    """The models that have an active version, by name: those new jobs can run on."""
    stmt = select(ModelPackage.name).where(ModelPackage.status == "active").distinct().order_by(ModelPackage.name)
    return list(session.scalars(stmt))


def add_model_package(
    session: Session, *, name: str, version: str, framework: str, manifest: str, allow_legacy_format: bool = False
) -> ModelPackage:
    """Register a new, inactive version (the caller checked it is not registered yet)."""
    row = ModelPackage(
        name=name,
        version=version,
        framework=framework,
        manifest=manifest,
        status="inactive",
        uploaded_at=datetime.now(UTC),
        activated_at=None,
        allow_legacy_format=allow_legacy_format,
    )
    session.add(row)
    session.flush()
    return row


def activate_model_package(session: Session, *, row: ModelPackage) -> None:
    """Make `row` the one active version of its name; the previously active one becomes inactive."""
    others = select(ModelPackage).where(
        ModelPackage.name == row.name, ModelPackage.status == "active", ModelPackage.version != row.version
    )
    for other in session.scalars(others.with_for_update()):
        other.status = "inactive"
    row.status = "active"
    row.activated_at = datetime.now(UTC)
    session.flush()


def deactivate_model_package(session: Session, *, row: ModelPackage) -> None:
    """Take `row` out of use until it is activated again: new jobs of its name find no active version."""
    if row.status == "active":
        row.status = "inactive"
    session.flush()


def retire_model_package(session: Session, *, row: ModelPackage) -> None:
    """Take `row` out of use for good (it can no longer be activated); its files stay."""
    row.status = "retired"
    session.flush()
