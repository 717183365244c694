"""Routing rules as stored data (`routing_rules`).

A row's `definition` is the whole rule as JSON; `integration.rules` validates and types it
(storage never imports integration). `name`, `priority` and `enabled` are copied into columns
so rules list in evaluation order and names stay unique.
"""

from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import StorageError
from storage.tables.pipeline import RoutingRule


class RuleExists(StorageError):
    """Another rule already has this name."""


class RuleNotFound(StorageError):
    """No rule has this id."""


class RuleData(Protocol):
    """What storage needs of a rule (integration.rules.Rule has it)."""

    @property
    def name(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def enabled(self) -> bool: ...
    def model_dump_json(self) -> str: ...


def list_rules(session: Session) -> list[tuple[int, str]]:
    """Every rule as (id, definition JSON), in evaluation order: priority, then name."""
    stmt = select(RoutingRule.id, RoutingRule.definition).order_by(RoutingRule.priority, RoutingRule.name)
    return [(rule_id, definition) for rule_id, definition in session.execute(stmt)]


def get_rule(session: Session, *, rule_id: int) -> str | None:
    """One rule's definition JSON, or None."""
    row = session.get(RoutingRule, rule_id)
    return None if row is None else row.definition


def save_rule(session: Session, rule: RuleData, *, rule_id: int | None = None) -> int:
    """Create a rule, or replace rule `rule_id`; returns its id.

    Raises RuleExists when another rule has the name, RuleNotFound for an unknown `rule_id`.
    """
    clash = select(RoutingRule.id).where(RoutingRule.name == rule.name)
    if rule_id is not None:
        clash = clash.where(RoutingRule.id != rule_id)
    if session.scalar(clash.limit(1)) is not None:
        raise RuleExists(f"a rule named {rule.name!r} exists")
    now = datetime.now(UTC)
    if rule_id is None:
        row = RoutingRule(created_at=now)
        session.add(row)
    else:
        found = session.get(RoutingRule, rule_id)
        if found is None:
            raise RuleNotFound(f"no rule {rule_id}")
        row = found
    row.name = rule.name
    row.priority = rule.priority
    row.enabled = rule.enabled
    row.definition = rule.model_dump_json()
    row.updated_at = now
    session.flush()
    return row.id


def delete_rule(session: Session, *, rule_id: int) -> bool:
    """Remove a rule; False when there was none."""
    row = session.get(RoutingRule, rule_id)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True
