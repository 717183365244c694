"""The routing rule evaluation (a pure function)."""

from datetime import UTC, datetime

from integration.messages import InstanceRef, StudyReady
from integration.rules import DEFAULT_RULES, Match, Rule, RunModel, evaluate


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
        assert [(a.model, a.version) for a in plan] == [("chest-xray-pneumonia", "0.3.0")]


def test_other_studies_are_not_routed() -> None:
    assert evaluate(DEFAULT_RULES, study(("CT", "CHEST"))) == {}
    assert evaluate(DEFAULT_RULES, study(("CR", "HAND"))) == {}
    assert evaluate(DEFAULT_RULES, study()) == {}


def test_only_matching_instances_are_inputs() -> None:
    plan = evaluate(DEFAULT_RULES, study(("CR", "CHEST"), ("SR", ""), ("DX", "CHEST")))
    (inputs,) = plan.values()
    assert [i.sop_uid for i in inputs] == ["1.2.1.0", "1.2.1.2"]


def test_disabled_rules_and_priority_and_calling_ae() -> None:
    a = RunModel(model="m", version="1")
    b = RunModel(model="m", version="2")
    rules = [
        Rule(name="late", priority=200, match=Match(), run=(b,)),
        Rule(name="early", priority=10, match=Match(calling_aes=("CT1",)), run=(a,)),
        Rule(name="off", priority=1, enabled=False, match=Match(), run=(RunModel(model="x", version="1"),)),
    ]
    assert list(evaluate(rules, study(("CR", "CHEST"), calling_ae="CT1"))) == [a]
    assert list(evaluate(rules, study(("CR", "CHEST"), calling_ae="OTHER"))) == [b]
