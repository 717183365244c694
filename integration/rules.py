"""Routing rules as data, evaluated by one pure function.

A rule matches instances by header fields; its action runs models on the matching instances.
Rules are data (pydantic-validated); the default set routes CR/DX chest studies to the chest
X-ray model, brain MR to brain extraction, CT and MR to the modality check, and report text to
triage. A rule names a model, not a version: new jobs use the registry's active version, and a
model with no active version gets no jobs.
"""

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from integration.messages import InstanceRef, StudyReady


class Match(BaseModel):
    """What a rule matches; an empty list matches anything. Comparisons ignore case."""

    model_config = ConfigDict(frozen=True)

    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    calling_aes: tuple[str, ...] = ()


class RunModel(BaseModel):
    """Run this model (its active version) on the matching instances."""

    model_config = ConfigDict(frozen=True)

    model: str


class Rule(BaseModel):
    """One routing rule."""

    model_config = ConfigDict(frozen=True)

    name: str
    priority: int = 100
    enabled: bool = True
    # study: a study became ready (match its instances); report: a report with text arrived.
    trigger: Literal["study", "report"] = "study"
    match: Match = Match()
    run: tuple[RunModel, ...]


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        name="chest-radiographs-to-pneumonia-model",
        match=Match(modalities=("CR", "DX"), body_parts=("CHEST",)),
        run=(RunModel(model="chest-xray-pneumonia"),),
    ),
    Rule(
        name="brain-mr-to-brain-extraction",
        match=Match(modalities=("MR",), body_parts=("BRAIN", "HEAD")),
        run=(RunModel(model="brain-extraction"),),
    ),
    Rule(
        name="ct-and-mr-to-modality-check",
        priority=200,
        match=Match(modalities=("CT", "MR")),
        run=(RunModel(model="modality-check"),),
    ),
    Rule(name="report-text-to-triage", trigger="report", run=(RunModel(model="report-triage"),)),
)


def _in(value: str, allowed: tuple[str, ...]) -> bool:
    return not allowed or value.strip().upper() in {a.upper() for a in allowed}


def matches(match: Match, instance: InstanceRef, calling_ae: str) -> bool:
    """True when one instance (with the AE that sent its study) satisfies `match`."""
    return (
        _in(instance.modality, match.modalities)
        and _in(instance.body_part, match.body_parts)
        and _in(calling_ae, match.calling_aes)
    )


def evaluate(rules: Sequence[Rule], study: StudyReady) -> dict[RunModel, list[InstanceRef]]:
    """Which model runs on which instances of `study`: enabled rules in priority order, first wins per model."""
    plan: dict[RunModel, list[InstanceRef]] = {}
    study_rules = (r for r in rules if r.enabled and r.trigger == "study")
    for rule in sorted(study_rules, key=lambda r: (r.priority, r.name)):
        selected = [i for i in study.instances if matches(rule.match, i, study.calling_ae)]
        if not selected:
            continue
        for action in rule.run:
            if all(existing.model != action.model for existing in plan):
                plan[action] = selected
    return plan


def report_models(rules: Sequence[Rule]) -> list[RunModel]:
    """The models that read the text of every report, from enabled report rules in priority order."""
    found: list[RunModel] = []
    for rule in sorted((r for r in rules if r.enabled and r.trigger == "report"), key=lambda r: (r.priority, r.name)):
        found.extend(a for a in rule.run if a not in found)
    return found
