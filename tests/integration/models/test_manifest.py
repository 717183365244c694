"""The builtin manifest and the accepts() rule."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from inference.packages import lookup
from integration.models.manifest import Manifest, accepts

CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_IMAGE = "1.2.840.10008.5.1.4.1.1.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def test_builtin_manifest_validates() -> None:
    manifest, artifact = lookup("chest-xray-pneumonia")
    again = Manifest.model_validate_json(manifest.model_dump_json())
    assert again == manifest
    assert artifact.is_file() and artifact.suffix == ".keras" and artifact.name == manifest.artifact
    assert manifest.clinical_use is False
    assert [o.concept.code for o in manifest.outputs] == ["233604007"]


@pytest.mark.parametrize(
    ("modality", "body_part", "sop_class", "expected"),
    [
        ("CR", "CHEST", CR_IMAGE, True),
        ("DX", "CHEST", DX_IMAGE, True),
        ("dx", "chest ", DX_IMAGE, True),  # CS values compared upper-cased and stripped
        ("CT", "CHEST", CT_IMAGE, False),
        ("CR", "SKULL", CR_IMAGE, False),
        ("CR", "", CR_IMAGE, False),
    ],
)
def test_accepts(modality: str, body_part: str, sop_class: str, expected: bool) -> None:
    manifest, _ = lookup("chest-xray-pneumonia")
    assert accepts(manifest, modality, body_part, sop_class) is expected


def test_sop_class_list_restricts_when_given() -> None:
    manifest, _ = lookup("chest-xray-pneumonia")
    only_dx = manifest.model_copy(update={"accepts": manifest.accepts.model_copy(update={"sop_classes": [DX_IMAGE]})})
    assert accepts(only_dx, "DX", "CHEST", DX_IMAGE)
    assert not accepts(only_dx, "CR", "CHEST", CR_IMAGE)


def test_unknown_framework_is_rejected() -> None:
    manifest, _ = lookup("chest-xray-pneumonia")
    data = manifest.model_dump()
    data["framework"] = "caffe"
    with pytest.raises(ValidationError):
        Manifest.model_validate(data)


@pytest.mark.parametrize("name", ["report-triage", "modality-check"])
def test_other_builtin_manifests_round_trip(name: str, tmp_path: Path) -> None:
    manifest, artifact = lookup(name, tmp_path)
    assert Manifest.model_validate_json(manifest.model_dump_json()) == manifest
    assert artifact.is_dir() and artifact.name == manifest.artifact and not manifest.clinical_use


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"preprocessing": {"kind": "image"}}, "preprocessing.size"),
        ({"task": "measurement"}, "unit"),
        ({"task": "text-classification", "preprocessing": {"kind": "report-text"}}, "description"),
        ({"preprocessing": {"kind": "series-statistics"}}, "accepts.features"),
        ({"artifact": "../model.keras"}, "artifact"),
        ({"name": "Chest X-ray"}, "name"),
    ],
)
def test_inconsistent_manifests_are_refused(change: dict[str, object], problem: str) -> None:
    manifest, _ = lookup("chest-xray-pneumonia")
    with pytest.raises(ValidationError, match=problem.split(".")[-1]):
        Manifest.model_validate({**manifest.model_dump(), **change})
