"""Routing rules as data, evaluated by one pure function.

A rule is stored data (table `routing_rules`, edited through the admin API): a match on what
a study and its series are, and actions: run models, forward to destinations, hold for manual
release, or drop. `evaluate` turns the enabled rules and the facts of one study into a `Plan`;
it reads nothing but its arguments, so the router and the dry run decide the same way.

Study-level criteria (AE titles, source address, StudyDescription, the linked order) must hold
for the study; series-level criteria (Modality, BodyPartExamined, SOP Class, SeriesDescription,
any other tag) select series. A model runs on the instances of the series its rule selected
(series by series); forward, hold and drop act on the whole study once one series is selected
(study by study). A rule names a model, not a version: new jobs use the registry's active
version. The default set (seeded by migration 0701) routes CR/DX chest studies to the chest
X-ray model, brain MR to brain extraction, CT and MR to the modality check, and report text to
triage.
"""

import ipaddress
import re
from collections.abc import Sequence
from typing import Any, Literal

import re2
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydicom.datadict import dictionary_has_tag, tag_for_keyword
from sqlalchemy.orm import Session

from integration.messages import InstanceRef
from storage import rules as stored

# A study released by hand (PS3.4 has no such notion: our own StudyReady reason) passes hold rules.
MANUAL_RELEASE = "manual-release"
_TAG_NUMBER = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")


def tag_key(text: str) -> str:
    """A DICOM keyword ("PatientSex") or tag number ("(0010,0040)", "00100040") as 8 hex digits.

    Raises ValueError for an unknown keyword, or a tag number neither in the data dictionary
    (PS3.6) nor private (odd group, PS3.5 7.8).
    """
    text = text.strip()
    number = _TAG_NUMBER.match(text)
    if number:
        tag = int(number.group(1) + number.group(2), 16)
        if not dictionary_has_tag(tag) and not (tag >> 16) % 2:
            raise ValueError(f"{text} is not a tag of the DICOM data dictionary nor a private tag")
        return f"{tag:08X}"
    found = tag_for_keyword(text)
    if found is None:
        raise ValueError(f"{text!r} is not a DICOM keyword or tag number")
    return f"{found:08X}"


# Rules' patterns run on RE2, whose matching is linear in the value whatever the pattern: a rule
# such as "(a+)+$" cannot stall the router (Python's re backtracks exponentially on it, issue 18).
# RE2 has no look-around or back-references; a pattern using them is refused when the rule is saved.
MAX_PATTERN_CHARS = 512
# A value longer than this is matched on its first characters: DICOM's longest text VR read as a
# study fact, LT, holds 10240 characters (PS3.5 6.2).
MAX_VALUE_CHARS = 10240


def _options() -> Any:
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False  # a refused pattern is answered to the admin, not logged by RE2
    return options


_OPTIONS = _options()


def _check_pattern(pattern: str) -> str:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"a pattern has at most {MAX_PATTERN_CHARS} characters")
    try:
        re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        raise ValueError(f"not a regular expression RE2 takes (no look-around, no back-references): {exc}") from exc
    return pattern


class TagMatch(BaseModel):
    """One header element of a series' first instance, matched by a regular expression."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tag: str  # keyword or tag number, as written
    pattern: str  # case-insensitive RE2 search on the value; an absent element reads as ""

    @field_validator("tag")
    @classmethod
    def _known_tag(cls, value: str) -> str:
        tag_key(value)
        return value.strip()

    _pattern = field_validator("pattern")(_check_pattern)


class Match(BaseModel):
    """What a rule matches; an empty criterion matches anything. Codes and names ignore case."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Study level.
    calling_aes: tuple[str, ...] = ()
    called_aes: tuple[str, ...] = ()
    source_addresses: tuple[str, ...] = ()  # an IP address, a host name or a CIDR network
    study_description: str = ""  # regular expression
    has_order: bool | None = None
    order_codes: tuple[str, ...] = ()  # ServiceRequest.code codings' codes
    # Series level.
    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    sop_classes: tuple[str, ...] = ()
    series_description: str = ""  # regular expression
    tags: tuple[TagMatch, ...] = ()

    _patterns = field_validator("study_description", "series_description")(_check_pattern)

    @field_validator("source_addresses")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if "/" in entry:
                ipaddress.ip_network(entry.strip(), strict=False)  # ValueError names the bad entry
        return value


class RunModel(BaseModel):
    """Run this model (its active version) on the matching instances."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str


class Rule(BaseModel):
    """One routing rule: a match and at least one action; drop excludes every other action."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    # A column of the rules table: a signed 64-bit SQL integer.
    priority: int = Field(default=100, ge=-(2**63), le=2**63 - 1)
    enabled: bool = True
    # study: a study became ready (match its series); report: a report with text arrived.
    trigger: Literal["study", "report"] = "study"
    match: Match = Match()
    run: tuple[RunModel, ...] = ()
    forward: tuple[str, ...] = ()  # destination names
    hold: bool = False
    drop: bool = False

    @model_validator(mode="after")
    def _actions(self) -> "Rule":
        if not (self.run or self.forward or self.hold or self.drop):
            raise ValueError("a rule needs an action: run, forward, hold or drop")
        if self.drop and (self.run or self.forward or self.hold):
            raise ValueError("drop excludes every other action")
        if self.trigger == "report" and (self.forward or self.hold):
            raise ValueError("a report rule can only run models")
        return self


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


# Facts: what evaluation reads about one study, gathered by integration.facts.


class SeriesFacts(BaseModel):
    """One series: its header fields, the first instance's other elements, its instances."""

    model_config = ConfigDict(frozen=True)

    series_uid: str
    modality: str = ""
    body_part: str = ""
    series_description: str = ""
    sop_classes: tuple[str, ...] = ()
    # Element value as text by 8-hex-digit tag ("00100040"); filled only when a rule reads tags.
    tags: dict[str, str] = {}
    instances: tuple[InstanceRef, ...] = ()


class StudyFacts(BaseModel):
    """One study as the rules see it."""

    model_config = ConfigDict(frozen=True)

    study_uid: str
    calling_ae: str = ""
    called_ae: str = ""
    source_address: str = ""
    study_description: str = ""
    has_order: bool = False
    order_codes: tuple[str, ...] = ()
    reason: str = ""  # StudyReady.reason
    series: tuple[SeriesFacts, ...] = ()


# The plan: what evaluation decided. Instance lists are for the router, not the dry-run answer.


class ModelRun(BaseModel):
    """Run `model` on the instances of these series, because of `rule`."""

    model: str
    rule: str
    series_uids: list[str]
    instance_count: int
    instances: list[InstanceRef] = Field(default=[], exclude=True)


class ForwardTo(BaseModel):
    """Send every instance of the study to `destination`, because of `rule`."""

    destination: str
    rule: str
    instance_count: int
    instances: list[InstanceRef] = Field(default=[], exclude=True)


class Plan(BaseModel):
    """What the rules decided for one study.

    `dropped_by`: nothing happens (drop wins over every other rule, whatever its priority).
    `held_by`: nothing happens until the study is released; `runs` and `forwards` say what the
    release will do. `matched`: every enabled rule that matched, in evaluation order.
    """

    study_uid: str
    runs: list[ModelRun] = []
    forwards: list[ForwardTo] = []
    held_by: str = ""
    dropped_by: str = ""
    matched: list[str] = []


def _in(value: str, allowed: tuple[str, ...]) -> bool:
    return not allowed or value.strip().upper() in {a.strip().upper() for a in allowed}


def _search(pattern: str, value: str) -> bool:
    return not pattern or re2.search(pattern, value[:MAX_VALUE_CHARS], _OPTIONS) is not None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d (RFC 4291 2.5.5.2).
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped or address


def _address_in(address: str, allowed: tuple[str, ...]) -> bool:
    if not allowed:
        return True
    ip = _ip(address)
    for entry in allowed:
        if "/" in entry:
            if ip is not None and ip in ipaddress.ip_network(entry.strip(), strict=False):
                return True
        elif (ip is not None and _ip(entry) == ip) or entry.strip().lower() == address.strip().lower():
            return True
    return False


def study_matches(match: Match, facts: StudyFacts) -> bool:
    """True when the study-level criteria of `match` hold for the study."""
    return (
        _in(facts.calling_ae, match.calling_aes)
        and _in(facts.called_ae, match.called_aes)
        and _address_in(facts.source_address, match.source_addresses)
        and _search(match.study_description, facts.study_description)
        and (match.has_order is None or match.has_order == facts.has_order)
        and (not match.order_codes or any(_in(code, match.order_codes) for code in facts.order_codes))
    )


def series_matches(match: Match, series: SeriesFacts) -> bool:
    """True when the series-level criteria of `match` select the series."""
    return (
        _in(series.modality, match.modalities)
        and _in(series.body_part, match.body_parts)
        and (not match.sop_classes or any(uid in match.sop_classes for uid in series.sop_classes))
        and _search(match.series_description, series.series_description)
        and all(_search(t.pattern, series.tags.get(tag_key(t.tag), "")) for t in match.tags)
    )


def _ordered(rules: Sequence[Rule], trigger: str) -> list[Rule]:
    return sorted((r for r in rules if r.enabled and r.trigger == trigger), key=lambda r: (r.priority, r.name))


def evaluate(rules: Sequence[Rule], facts: StudyFacts) -> Plan:
    """Decide what happens to one study: enabled rules in priority order (then name), the first
    rule wins per model and per destination, any matching drop rule wins over everything, and a
    hold rule holds the study unless it was released by hand."""
    runs: dict[str, ModelRun] = {}
    forwards: dict[str, ForwardTo] = {}
    matched: list[str] = []
    held_by = dropped_by = ""
    everything = [i for s in facts.series for i in s.instances]
    for rule in _ordered(rules, "study"):
        if not study_matches(rule.match, facts):
            continue
        series = [s for s in facts.series if series_matches(rule.match, s)]
        if not series:
            continue
        matched.append(rule.name)
        dropped_by = dropped_by or (rule.name if rule.drop else "")
        if rule.hold and not held_by and facts.reason != MANUAL_RELEASE:
            held_by = rule.name
        selected = [i for s in series for i in s.instances]
        for action in rule.run:
            if action.model not in runs and selected:
                runs[action.model] = ModelRun(
                    model=action.model,
                    rule=rule.name,
                    series_uids=[s.series_uid for s in series],
                    instance_count=len(selected),
                    instances=selected,
                )
        for destination in rule.forward:
            if destination not in forwards:
                forwards[destination] = ForwardTo(
                    destination=destination, rule=rule.name, instance_count=len(everything), instances=everything
                )
    if dropped_by:
        return Plan(study_uid=facts.study_uid, dropped_by=dropped_by, matched=matched)
    return Plan(
        study_uid=facts.study_uid,
        runs=list(runs.values()),
        forwards=list(forwards.values()),
        held_by=held_by,
        matched=matched,
    )


def reads_tags(rules: Sequence[Rule]) -> bool:
    """True when an enabled study rule matches header tags (so the facts need the first headers)."""
    return any(rule.match.tags for rule in _ordered(rules, "study"))


def report_models(rules: Sequence[Rule]) -> list[RunModel]:
    """The models that read the text of every report, from enabled report rules in priority order."""
    found: list[RunModel] = []
    for rule in _ordered(rules, "report"):
        found.extend(a for a in rule.run if a not in found)
    return found


def load_rules(session: Session) -> list[tuple[int, Rule]]:
    """Every stored rule with its id, by priority then name."""
    return [(rule_id, Rule.model_validate_json(text)) for rule_id, text in stored.list_rules(session)]


def get_rule(session: Session, *, rule_id: int) -> Rule | None:
    """One stored rule, or None."""
    text = stored.get_rule(session, rule_id=rule_id)
    return None if text is None else Rule.model_validate_json(text)


def save(session: Session, rule: Rule, rule_id: int | None = None) -> int:
    """Store a new rule, or replace rule `rule_id`; returns its id. Raises storage.rules.RuleExists."""
    return stored.save_rule(session, rule, rule_id=rule_id)
