"""The manifest of a model package: what it accepts, how to prepare its input, what its outputs mean."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from integration.messages import Coding

# Series statistics a tabular model can read, computed over a series' pixels in modality units
# (Hounsfield units for CT, PS3.3 C.11.1 Rescale Slope/Intercept).
Feature = Literal["mean", "std", "min", "max"]


class SeriesSelection(BaseModel):
    """Which one series of a study a volume or series-statistics model reads."""

    model_config = ConfigDict(frozen=True)

    # Fewer instances than this is a scout or a single slice, not a volume.
    min_instances: int = Field(default=1, ge=1)
    # Case-insensitive words of which Series Description (0008,103E) must contain one; empty: any.
    description_contains: list[str] = []
    # Among matching series, the one with the most instances: the primary acquisition.
    choose: Literal["most-instances", "first"] = "most-instances"


class Accepts(BaseModel):
    """Which inputs a model can read; an empty list accepts any value."""

    model_config = ConfigDict(frozen=True)

    # DICOM Modality (0008,0060) and Body Part Examined (0018,0015) are code strings (PS3.5 6.2,
    # VR CS: upper case), so they are compared upper-cased and stripped.
    modalities: list[str] = []
    body_parts: list[str] = []
    sop_classes: list[str] = []
    series: SeriesSelection = SeriesSelection()
    # Tabular models: the features they read, in the order of their input columns.
    features: list[Feature] = []


class Window(BaseModel):
    """A fixed VOI window in modality units (PS3.3 C.11.2.1.2), e.g. a CT lung window in HU."""

    model_config = ConfigDict(frozen=True)

    center: float
    width: float = Field(gt=0)


class Preprocessing(BaseModel):
    """How an input (an image, a series volume, its statistics, or report text) becomes a model input."""

    model_config = ConfigDict(frozen=True)

    # image: one 2-D image per instance; volume: one series assembled into a 3-D volume;
    # series-statistics: the `accepts.features` of one series; report-text: the text of a report.
    kind: Literal["image", "volume", "series-statistics", "report-text"] = "image"
    # (rows, columns) of an image input.
    size: tuple[int, int] | None = None
    channels: int = Field(default=1, ge=1)
    # "xception": Keras xception.preprocess_input, x/127.5 - 1 on 0..255, so -1..1; "zero-one": 0..1;
    # "none": modality values as they are (the model normalises itself).
    normalisation: Literal["xception", "zero-one", "none"] = "zero-one"
    # Resampling the model was trained with; matching it matters more than the smoother filter.
    resample: Literal["bilinear", "nearest"] = "bilinear"
    invert_monochrome1: bool = True
    # A fixed window instead of the one the instance carries (images only).
    window: Window | None = None
    # Volumes: where the array's axes point. RAS: toward the patient's right, anterior, superior
    # (NIfTI's canonical order); LPS: left, posterior, superior (the DICOM patient system, PS3.3
    # C.7.6.2.1.1). And the voxel size (mm) to resample to; None keeps the acquired one.
    orientation: Literal["RAS", "LPS"] = "RAS"
    spacing: tuple[float, float, float] | None = None
    # Report text: split into clauses, each scored on its own (a report names many findings).
    max_tokens: int = Field(default=256, ge=8)


class Postprocessing(BaseModel):
    """How raw outputs become findings, measurements and stored objects."""

    model_config = ConfigDict(frozen=True)

    # Applied to the raw model output to get probabilities ("none": the model already gives them).
    activation: Literal["softmax", "sigmoid", "none"] = "none"
    # Segmentation: probability above which a voxel is in the mask, and mask clean-up.
    mask_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    largest_component: bool = False
    fill_holes: bool = False
    # Consistency checks: the DICOM attribute (keyword) whose value the predicted class should
    # match, and the finding raised when it does not.
    compare_with_attribute: str = ""
    contradiction: "OutputLabel | None" = None


class OutputLabel(BaseModel):
    """One output of the model with its coded meaning and decision threshold."""

    model_config = ConfigDict(frozen=True)

    # Position of this label in the model's output vector.
    index: int = Field(default=0, ge=0)
    concept: Coding
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    # Measurements: the UCUM unit of the value (FHIR Quantity.code), e.g. "cm3"; and its name.
    unit: str = ""
    text: str = ""
    # Report text: a sentence reporting this finding (see inference.text for how it is used).
    description: str = ""
    # Consistency checks: the attribute value this class stands for, e.g. "CT".
    attribute_value: str = ""


Postprocessing.model_rebuild()


class Manifest(BaseModel):
    """A model package: identity, framework, inputs, preprocessing, outputs and report coding."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,63}$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,31}$")
    framework: Literal["keras", "torch", "onnx", "transformers", "xgboost"]
    task: Literal["classification", "segmentation", "measurement", "text-classification", "tabular"]
    accepts: Accepts
    preprocessing: Preprocessing
    postprocessing: Postprocessing = Postprocessing()
    # Classification and tabular: one label per output column. Segmentation and measurement: the
    # segmented structure first, then one label per measurement (with `unit`).
    outputs: list[OutputLabel]
    report_code: Coding
    report_category: Coding
    # False until a site has validated the model: every result then says "not for clinical use".
    clinical_use: bool = False
    # File (or directory, for transformers models and ensembles) of the artifact inside the package.
    artifact: str

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        pre = self.preprocessing
        if pre.kind == "image" and pre.size is None:
            raise ValueError("an image model needs preprocessing.size")
        if pre.kind == "series-statistics" and not self.accepts.features:
            raise ValueError("a series-statistics model needs accepts.features")
        if self.task == "text-classification" and not all(o.description for o in self.outputs):
            raise ValueError("text-classification outputs need a description")
        if self.task in ("segmentation", "measurement") and not any(o.unit for o in self.outputs[1:]):
            raise ValueError("segmentation/measurement outputs need a measurement with a unit after the structure")
        post = self.postprocessing
        if post.compare_with_attribute and (post.contradiction is None or not all(o.attribute_value for o in self.outputs)):
            raise ValueError("compare_with_attribute needs a contradiction label and attribute_value on every output")
        if "/" in self.artifact or self.artifact in ("", ".", "..", "manifest.json"):
            raise ValueError("artifact is a file or directory name inside the package")
        return self

    @property
    def activation(self) -> str:
        """The activation applied to raw outputs (kept for callers of the first manifest format)."""
        return self.postprocessing.activation


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
