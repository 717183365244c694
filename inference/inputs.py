"""A request's inputs -> what its model reads, by the manifest's input kind.

`fetch` gives an object's bytes (from object storage); it is the only I/O here, and it runs in
the caller's thread, so call these functions from a worker thread.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset

from inference import preprocess, text, volumes
from inference.adapters import Batch
from inference.errors import CannotDecode, InputNotAccepted
from integration.models.manifest import Manifest, accepts
from integration.messages import InferenceRequest

Fetch = Callable[[str], bytes]
# (7FE0,0010) Pixel Data: the elements before it are the header (PS3.5 7.1).
PIXEL_DATA = 0x7FE00010


@dataclass(frozen=True)
class ModelInput:
    """What the model reads for one request, the keys it came from, and what postprocessing needs."""

    batch: Batch
    input_keys: list[str]
    # Series statistics: the value of the attribute the prediction is checked against.
    attribute_value: str = ""
    # Volumes: voxel -> RAS mm, for the mask and its measurements.
    affine: NDArray[np.float64] | None = None
    # Volumes: the series' headers (without pixel data), which a mask's DICOM SEG references.
    headers: tuple[Dataset, ...] = ()
    # Inputs skipped as unreadable, each with why.
    problems: tuple[str, ...] = ()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def images(request: InferenceRequest, manifest: Manifest, fetch: Fetch) -> ModelInput:
    """One 2-D model input per accepted instance; one unreadable instance does not sink the study."""
    candidates = [r for r in request.inputs if accepts(manifest, r.modality, r.body_part, r.sop_class_uid)]
    if not candidates:
        wanted = f"modalities {manifest.accepts.modalities}, body parts {manifest.accepts.body_parts}"
        raise InputNotAccepted(f"none of the {len(request.inputs)} inputs matches {manifest.name} ({wanted})")
    arrays: list[NDArray[np.float32]] = []
    keys: list[str] = []
    problems: list[str] = []
    for ref in candidates:
        try:
            arrays.append(preprocess.prepare(fetch(ref.object_key), manifest))
            keys.append(ref.object_key)
        except (InputNotAccepted, CannotDecode) as exc:
            problems.append(f"{ref.object_key}: {_describe(exc)}")
    if not arrays:
        raise CannotDecode("; ".join(problems))
    return ModelInput(batch=np.stack(arrays), input_keys=keys, problems=tuple(problems))


def _series(request: InferenceRequest, manifest: Manifest, fetch: Fetch) -> tuple[list[str], list[Dataset]]:
    """The keys and parsed instances of the first candidate series whose header the manifest accepts."""
    candidates = volumes.select_series(manifest, request.inputs)
    if not candidates:
        rule = manifest.accepts.series
        raise InputNotAccepted(
            f"no series of {manifest.accepts.modalities or 'any modality'} with at least {rule.min_instances} instances"
        )
    reasons = []
    for series in candidates:
        datasets = [preprocess.read(fetch(ref.object_key)) for ref in series]
        try:
            for ds in datasets:
                preprocess.check_accepted(ds, manifest)
            volumes.check_description(manifest, datasets[0])
        except InputNotAccepted as exc:
            reasons.append(str(exc))
            continue
        return [ref.object_key for ref in series], datasets
    raise InputNotAccepted("; ".join(reasons))


def volume(request: InferenceRequest, manifest: Manifest, fetch: Fetch) -> ModelInput:
    """The selected series as one (1, 1, x, y, z) volume in the manifest's orientation."""
    keys, datasets = _series(request, manifest, fetch)
    vol = volumes.assemble(datasets, manifest.preprocessing)
    headers = tuple(_header(ds) for ds in datasets)
    return ModelInput(batch=vol.array[np.newaxis, np.newaxis], input_keys=keys, affine=vol.affine, headers=headers)


def _header(ds: Dataset) -> Dataset:
    """An instance's elements before its pixel data, with its file meta (what pydicom's
    stop_before_pixels reads), so the pixels need not be kept or copied to reference it."""
    header = Dataset({tag: ds[tag] for tag in ds.keys() if tag < PIXEL_DATA})
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        header.file_meta = meta
    return header


def series_statistics(request: InferenceRequest, manifest: Manifest, fetch: Fetch) -> ModelInput:
    """The selected series' statistics as one (1, features) row, with the attribute to check."""
    keys, datasets = _series(request, manifest, fetch)
    row = volumes.statistics(datasets, manifest.accepts.features)
    keyword = manifest.postprocessing.compare_with_attribute
    value = str(getattr(datasets[0], keyword, "")) if keyword else ""
    return ModelInput(batch=row[np.newaxis], input_keys=keys, attribute_value=value)


def report_text(request: InferenceRequest, manifest: Manifest, fetch: Fetch) -> ModelInput:
    """The clauses of the request's report texts (each clause is scored on its own)."""
    found = [c for t in request.texts for c in text.clauses(t.text)]
    if not found:
        raise InputNotAccepted(f"{manifest.name} reads report text; the request has none")
    return ModelInput(batch=found, input_keys=[t.ref for t in request.texts])


READERS: dict[str, Callable[[InferenceRequest, Manifest, Fetch], ModelInput]] = {
    "image": images,
    "volume": volume,
    "series-statistics": series_statistics,
    "report-text": report_text,
}


def model_input(request: InferenceRequest, manifest: Manifest, fetch: Fetch, *, max_text_chars: int) -> ModelInput:
    """What the model reads for `request`, by the manifest's input kind.

    Report texts longer than `max_text_chars` together are refused (InputNotAccepted) before they
    are split: what a text model reads is bounded, whatever a sender put in a report.
    """
    kind = manifest.preprocessing.kind
    if kind == "report-text":
        length = sum(len(t.text) for t in request.texts)
        if length > max_text_chars:
            raise InputNotAccepted(
                f"the request's report texts have {length} characters; {manifest.name} reads at most {max_text_chars}"
            )
    return READERS[kind](request, manifest, fetch)
