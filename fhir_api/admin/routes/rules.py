"""/admin/rules: routing rules as stored data (integration.rules.Rule), and dry runs against a stored study.

A dry run answers what one rule (saved, or a draft in the body) would do to a study now, as
integration.router.dry_run evaluates it, without doing anything; it changes nothing, so it is
not audited, but it is a POST and needs the admin role like every POST.
"""

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from audit.records import ADMIN_CONFIGURATION, SOFTWARE_CONFIGURATION
from fhir_api.admin.params import Id
from fhir_api.admin.access import ActorDep, audit_change
from fhir_api.admin.paging import Page, Paging, page_of, sorted_by
from fhir_api.deps import EngineDep, ObjectStoreDep
from fhir_api.errors import NotFound
from integration import router as study_router
from integration import rules
from integration.models.registry import rule_warnings
from storage.db import read_scope, session_scope
from storage.rules import delete_rule

router = APIRouter(prefix="/rules", tags=["rules"])
_ALERT = {"alert_type": SOFTWARE_CONFIGURATION}


class RuleOut(rules.Rule):
    """A stored rule and its id."""

    id: int


class DryRunIn(BaseModel):
    """The stored study to evaluate a saved rule against."""

    model_config = ConfigDict(extra="forbid")

    study_uid: str = Field(min_length=1, max_length=64)


class DraftDryRunIn(DryRunIn):
    """A rule not saved yet, and the stored study to evaluate it against."""

    rule: rules.Rule


def _out(rule_id: int, rule: rules.Rule) -> RuleOut:
    return RuleOut(id=rule_id, **rule.model_dump())


def _found(engine: EngineDep, rule_id: int) -> rules.Rule:
    with session_scope(engine) as session:
        rule = rules.get_rule(session, rule_id=rule_id)
    if rule is None:
        raise NotFound(f"no rule {rule_id}")
    return rule


_SORTS = ("id", "name", "priority", "enabled")


@router.get("")
def list_rules(engine: EngineDep, paging: Annotated[Paging, Depends(sorted_by(_SORTS))]) -> Page[RuleOut]:
    """The rules, in evaluation order (priority, then name) unless sorted otherwise."""
    with session_scope(engine) as session:
        found = [_out(rule_id, rule) for rule_id, rule in rules.load_rules(session)]
    return page_of(found, paging, getattr)


class Validation(BaseModel):
    """Whether a rule as written would be accepted, and what is wrong with it if not."""

    valid: bool
    errors: list[dict[str, Any]]


@router.post("/validate")
def validate_rule(body: Annotated[dict[str, Any], Body()]) -> Validation:
    """Check a rule as the editor holds it, without saving it: the console validates as one types."""
    try:
        rules.Rule.model_validate(body)
    except ValidationError as exc:
        errors = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors()]
        return Validation(valid=False, errors=errors)
    return Validation(valid=True, errors=[])


class RuleWarningOut(BaseModel):
    """An enabled rule that runs a model nothing will run (integration.models.registry.rule_warnings)."""

    rule: str
    model: str
    problem: str  # not registered | no active version | no worker running


@router.get("/warnings")
def list_rule_warnings(
    engine: EngineDep, paging: Annotated[Paging, Depends(sorted_by(("rule", "model", "problem")))]
) -> Page[RuleWarningOut]:
    """Enabled rules whose model is not registered, has no active version or no running worker."""
    with read_scope(engine) as session:
        found = [RuleWarningOut(**asdict(w)) for w in rule_warnings(session, now=datetime.now(UTC))]
    return page_of(found, paging, getattr)


@router.get("/{rule_id}")
def read_rule(rule_id: Id, engine: EngineDep) -> RuleOut:
    """One rule."""
    return _out(rule_id, _found(engine, rule_id))


@router.post("", status_code=201)
def create_rule(rule: Annotated[rules.Rule, Body()], engine: EngineDep, actor: ActorDep) -> RuleOut:
    """Store a rule (409 when its name is taken); the router uses it from the next study on."""
    with session_scope(engine) as session:
        rule_id = rules.save(session, rule)
        after = rule.model_dump(mode="json")
        audit_change(session, actor, hop=ADMIN_CONFIGURATION, before=None, after=after, detail=_ALERT)
    return _out(rule_id, rule)


@router.put("/{rule_id}")
def replace_rule(rule_id: Id, rule: Annotated[rules.Rule, Body()], engine: EngineDep, actor: ActorDep) -> RuleOut:
    """Replace a rule (404 when unknown, 409 when another rule has the name)."""
    with session_scope(engine) as session:
        before = rules.get_rule(session, rule_id=rule_id)
        if before is None:
            raise NotFound(f"no rule {rule_id}")
        rules.save(session, rule, rule_id=rule_id)
        audit_change(
            session,
            actor,
            hop=ADMIN_CONFIGURATION,
            before=before.model_dump(mode="json"),
            after=rule.model_dump(mode="json"),
            detail=_ALERT,
        )
    return _out(rule_id, rule)


@router.delete("/{rule_id}", status_code=204)
def remove_rule(rule_id: Id, engine: EngineDep, actor: ActorDep) -> Response:
    """Remove a rule."""
    with session_scope(engine) as session:
        before = rules.get_rule(session, rule_id=rule_id)
        if before is None or not delete_rule(session, rule_id=rule_id):
            raise NotFound(f"no rule {rule_id}")
        audit_change(
            session, actor, hop=ADMIN_CONFIGURATION, before=before.model_dump(mode="json"), after=None, detail=_ALERT
        )
    return Response(status_code=204)


@router.post("/dry-run")
def dry_run_draft(body: DraftDryRunIn, engine: EngineDep, objects: ObjectStoreDep) -> rules.Plan:
    """What a draft rule would do to a stored study now (404 for an unknown study); nothing is done."""
    return study_router.dry_run(engine, objects, body.rule, study_uid=body.study_uid)


@router.post("/{rule_id}/dry-run")
def dry_run_saved(rule_id: Id, body: DryRunIn, engine: EngineDep, objects: ObjectStoreDep) -> rules.Plan:
    """What a saved rule (enabled or not) would do to a stored study now; nothing is done."""
    return study_router.dry_run(engine, objects, _found(engine, rule_id), study_uid=body.study_uid)
