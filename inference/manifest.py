"""The manifest of a model package: what it accepts, how to prepare its input, what its outputs mean."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from integration.messages import Coding


class Accepts(BaseModel):
    """Which instances a model can read; an empty list accepts any value."""

    model_config = ConfigDict(frozen=True)

    # DICOM Modality (0008,0060) and Body Part Examined (0018,0015) are code strings (PS3.5 6.2,
    # VR CS: upper case), so they are compared upper-cased and stripped.
    modalities: list[str] = []
    body_parts: list[str] = []
    sop_classes: list[str] = []


class Preprocessing(BaseModel):
    """How pixel data becomes a model input."""

    model_config = ConfigDict(frozen=True)

    # (rows, columns) of the model input.
    size: tuple[int, int]
    channels: int = Field(ge=1)
    # "xception": Keras xception.preprocess_input, x/127.5 - 1 on 0..255, so -1..1; "zero-one": 0..1.
    normalisation: Literal["xception", "zero-one"]
    # Resampling the model was trained with; matching it matters more than the smoother filter.
    resample: Literal["bilinear", "nearest"] = "bilinear"
    invert_monochrome1: bool = True


class OutputLabel(BaseModel):
    """One output of the model with its coded meaning and decision threshold."""

    model_config = ConfigDict(frozen=True)

    # Position of this label in the model's output vector.
    index: int = Field(ge=0)
    concept: Coding
    threshold: float = Field(ge=0.0, le=1.0)


class Manifest(BaseModel):
    """A model package: identity, framework, inputs, preprocessing, outputs and report coding."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    framework: Literal["keras", "torch", "onnx", "transformers", "xgboost"]
    task: Literal["classification", "segmentation", "measurement", "text-classification", "tabular"]
    accepts: Accepts
    preprocessing: Preprocessing
    outputs: list[OutputLabel]
    # Applied to the raw model output to get probabilities ("none": the model already gives them).
    activation: Literal["softmax", "sigmoid", "none"]
    report_code: Coding
    report_category: Coding
    # False until a site has validated the model: every result then says "not for clinical use".
    clinical_use: bool = False
    # File name of the artifact inside the package.
    artifact: str


def _allowed(value: str, allowed: list[str]) -> bool:
    return not allowed or value.strip().upper() in {a.strip().upper() for a in allowed}


def accepts(manifest: Manifest, modality: str, body_part: str, sop_class: str) -> bool:
    """Whether the model can read an instance with this Modality, Body Part Examined and SOP Class UID."""
    rules = manifest.accepts
    return (
        _allowed(modality, rules.modalities)
        and _allowed(body_part, rules.body_parts)
        and (not rules.sop_classes or sop_class.strip() in rules.sop_classes)
    )
