"""The routing rule evaluation (a pure function)."""

from datetime import UTC, datetime

from integration.messages import InstanceRef, StudyReady
from integration.rules import DEFAULT_RULES, Match, Rule, RunModel, evaluate, report_models


def study(*instances: tuple[str, str], calling_ae: str = "PACS") -> StudyReady:
    return StudyReady(
        correlation_id="c",
        study_uid="1.2",
        revision=1,
        reason="quiet-period",
        calling_ae=calling_ae,
        last_received_at=datetime.now(UTC),
        instances=[
            InstanceRef(series_uid="1.2.1", sop_uid=f"1.2.1.{n}", sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
                        modality=m, body_part=b, object_key=f"k{n}")
            for n, (m, b) in enumerate(instances)
        ],
    )


def test_chest_radiographs_go_to_the_pneumonia_model() -> None:
    for modality in ("CR", "DX", "cr"):
        plan = evaluate(DEFAULT_RULES, study((modality, "CHEST")))
        assert [a.model for a in plan] == ["chest-xray-pneumonia"]


def test_brain_mr_goes_to_brain_extraction_and_the_modality_check() -> None:
    plan = evaluate(DEFAULT_RULES, study(("MR", "BRAIN")))
    assert [a.model for a in plan] == ["brain-extraction", "modality-check"]
    assert [a.model for a in evaluate(DEFAULT_RULES, study(("CT", "CHEST")))] == ["modality-check"]


def test_other_studies_are_not_routed() -> None:
    assert evaluate(DEFAULT_RULES, study(("CR", "HAND"))) == {}
    assert evaluate(DEFAULT_RULES, study(("US", "ABDOMEN"))) == {}
    assert evaluate(DEFAULT_RULES, study()) == {}


def test_report_rules_name_the_text_models_and_never_match_studies() -> None:
    assert [a.model for a in report_models(DEFAULT_RULES)] == ["report-triage"]
    only_reports = [r for r in DEFAULT_RULES if r.trigger == "report"]
    assert evaluate(only_reports, study(("CR", "CHEST"))) == {}


def test_only_matching_instances_are_inputs() -> None:
    plan = evaluate(DEFAULT_RULES, study(("CR", "CHEST"), ("SR", ""), ("DX", "CHEST")))
    (inputs,) = plan.values()
    assert [i.sop_uid for i in inputs] == ["1.2.1.0", "1.2.1.2"]


def test_disabled_rules_and_priority_and_calling_ae() -> None:
    m = RunModel(model="m")
    rules = [
        Rule(name="late", priority=200, match=Match(), run=(m,)),
        Rule(name="early", priority=10, match=Match(calling_aes=("CT1",), body_parts=("CHEST",)), run=(m,)),
        Rule(name="off", priority=1, enabled=False, match=Match(), run=(RunModel(model="x"),)),
    ]
    # The first matching rule (by priority) decides a model's inputs.
    early = evaluate(rules, study(("CR", "CHEST"), ("CR", "HAND"), calling_ae="CT1"))
    assert list(early) == [m] and [i.body_part for i in early[m]] == ["CHEST"]
    late = evaluate(rules, study(("CR", "CHEST"), ("CR", "HAND"), calling_ae="OTHER"))
    assert list(late) == [m] and [i.body_part for i in late[m]] == ["CHEST", "HAND"]
