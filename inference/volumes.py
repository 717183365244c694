"""A DICOM series -> a 3-D volume in a known orientation; series statistics; masks back on the slices and as NIfTI.

Slices are ordered by their position along the slice normal, never by Instance Number, which
scanners number in either direction (PS3.3 C.7.6.2.1.1: Image Position and Orientation
(Patient) place each pixel in the patient's LPS coordinate system).
"""

import gzip
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.pixels.processing import apply_modality_lut

from inference.errors import CannotDecode, InputNotAccepted
from integration.models.manifest import Feature, Manifest, Preprocessing, accepts
from integration.messages import InstanceRef

# Positions closer than this (mm) along the normal are one slice sent twice.
_SAME_POSITION_MM = 1e-3
# LPS (DICOM) -> RAS (NIfTI): x and y change sign.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Volume:
    """Voxel values in modality units; `affine` maps (i, j, k, 1) to RAS millimetres, as NIfTI does."""

    array: NDArray[np.float32]
    affine: NDArray[np.float64]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along each array axis (mm)."""
        x, y, z = (float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))
        return x, y, z


def select_series(manifest: Manifest, refs: Sequence[InstanceRef]) -> list[list[InstanceRef]]:
    """Candidate series (their instances), best first, by the manifest's series selection rule."""
    by_series: dict[str, list[InstanceRef]] = {}
    for ref in refs:
        if accepts(manifest, ref.modality, ref.body_part, ref.sop_class_uid):
            by_series.setdefault(ref.series_uid, []).append(ref)
    rule = manifest.accepts.series
    candidates = [s for s in by_series.values() if len(s) >= rule.min_instances]
    if rule.choose == "most-instances":
        candidates.sort(key=len, reverse=True)  # stable: ties keep study order
    return candidates


def check_description(manifest: Manifest, ds: Dataset) -> None:
    """Raise InputNotAccepted unless Series Description contains one of the manifest's words."""
    words = manifest.accepts.series.description_contains
    description = str(ds.get("SeriesDescription", "")).upper()
    if words and not any(w.upper() in description for w in words):
        raise InputNotAccepted(f"series description does not name any of {words}")


def _pixels(ds: Dataset) -> NDArray[np.float64]:
    try:
        return np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)
    except Exception as exc:  # no pixel data, unknown syntax, missing decoder plugin, truncated data
        raise CannotDecode(f"cannot decode pixel data: {type(exc).__name__}: {exc}") from exc


def _floats(ds: Dataset, keyword: str, count: int) -> NDArray[np.float64]:
    value = ds.get(keyword)
    if value is None or len(value) != count:
        raise CannotDecode(f"{keyword} missing or malformed: a volume needs it on every slice")
    return np.asarray([float(v) for v in value], dtype=np.float64)


def _positioned(datasets: Sequence[Dataset]) -> list[tuple[float, NDArray[np.float64], Dataset]]:
    """(distance along the slice normal, Image Position, slice), nearest the origin first."""
    if not datasets:
        raise InputNotAccepted("no slices")
    orientation = _floats(datasets[0], "ImageOrientationPatient", 6)
    normal = np.cross(orientation[:3], orientation[3:])
    positioned = []
    for ds in datasets:
        if not np.allclose(_floats(ds, "ImageOrientationPatient", 6), orientation, atol=1e-4):
            raise CannotDecode("the series mixes slice orientations")
        position = _floats(ds, "ImagePositionPatient", 3)
        positioned.append((float(position @ normal), position, ds))
    positioned.sort(key=lambda p: p[0])
    return positioned


def in_slice_order(datasets: Sequence[Dataset]) -> list[Dataset]:
    """The slices of one series in the order `assemble` stacks them (by position along the normal)."""
    return [p[2] for p in _positioned(datasets)]


def assemble(datasets: Sequence[Dataset], pre: Preprocessing) -> Volume:
    """Stack single-frame slices of one series into a volume oriented and spaced as `pre` asks."""
    nibabel: Any = importlib.import_module("nibabel")  # untyped: keep its calls out of mypy's strict checks

    positioned = _positioned(datasets)
    orientation = _floats(positioned[0][2], "ImageOrientationPatient", 6)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    distances = np.diff([p[0] for p in positioned])
    if len(distances) and distances.min() < _SAME_POSITION_MM:
        raise CannotDecode("two slices share one position")
    if len(distances) and np.ptp(distances) > 0.01 * float(np.median(distances)) + 1e-3:
        raise CannotDecode("slices are not evenly spaced")
    first = positioned[0][2]
    # PixelSpacing is (row spacing, column spacing) = (between rows, between columns), PS3.3 10.7.1.3.
    row_spacing, col_spacing = _floats(first, "PixelSpacing", 2)
    step = float(np.median(distances)) if len(distances) else float(first.get("SliceThickness", 1.0) or 1.0)
    # Array axes: (column index, row index, slice index), so axis 0 runs along the row direction.
    slices = [_pixels(p[2]) for p in positioned]
    if any(s.shape != slices[0].shape or s.ndim != 2 for s in slices):
        raise CannotDecode("slices differ in size or are not single frames")
    array = np.stack(slices, axis=-1).transpose(1, 0, 2)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = normal * step
    lps[:3, 3] = positioned[0][1]
    image = nibabel.Nifti1Image(array.astype(np.float32), _LPS_TO_RAS @ lps)
    image = nibabel.as_closest_canonical(image)  # RAS+
    data = np.asarray(image.dataobj, dtype=np.float32)
    affine = np.asarray(image.affine, dtype=np.float64)
    if pre.spacing is not None:
        data, affine = _resample(data, affine, pre.spacing)
    if pre.orientation == "LPS":
        data, affine = _flip_xy(data, affine)
    return Volume(array=data, affine=affine)


def _resample(
    data: NDArray[np.float32], affine: NDArray[np.float64], spacing: tuple[float, float, float]
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    from scipy import ndimage

    current = np.linalg.norm(affine[:3, :3], axis=0)
    factors = current / np.asarray(spacing)
    out = ndimage.zoom(data, factors, order=1).astype(np.float32)
    scaled = affine.copy()
    scaled[:3, :3] = affine[:3, :3] / factors
    return out, scaled


def _flip_xy(data: NDArray[np.float32], affine: NDArray[np.float64]) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    # RAS+ -> LPS+: reverse the first two axes; the affine's origin moves to the far corner.
    flipped = affine.copy()
    for axis in (0, 1):
        flipped[:3, 3] += affine[:3, axis] * (data.shape[axis] - 1)
        flipped[:3, axis] = -affine[:3, axis]
    return np.ascontiguousarray(data[::-1, ::-1, :]), flipped


def statistics(datasets: Sequence[Dataset], features: Sequence[Feature]) -> NDArray[np.float32]:
    """The named statistics of every pixel of a series, in modality units (HU for CT)."""
    values = np.concatenate([_pixels(ds).ravel() for ds in datasets])
    if values.size == 0:
        raise CannotDecode("the series has no pixels")
    compute: dict[str, Callable[[NDArray[np.float64]], Any]] = {
        "mean": np.mean,
        "std": np.std,
        "min": np.min,
        "max": np.max,
    }
    return np.asarray([float(compute[f](values)) for f in features], dtype=np.float32)


def clean_mask(mask: NDArray[np.bool_], *, largest_component: bool, fill_holes: bool) -> NDArray[np.bool_]:
    """Keep the largest 6-connected component and fill enclosed holes, as the manifest asks."""
    from scipy import ndimage

    if largest_component and mask.any():
        labels, count = ndimage.label(mask)
        if count > 1:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            mask = labels == int(sizes.argmax())
    if fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    return np.asarray(mask, dtype=bool)


def mask_on_slices(mask: NDArray[np.bool_], affine: NDArray[np.float64], slices: Sequence[Dataset]) -> NDArray[np.bool_]:
    """The mask resampled (nearest voxel) onto each slice's pixel grid: (slices, rows, columns).

    `affine` maps mask voxels to RAS mm; a pixel's LPS position is Image Position plus column
    index x row direction x column spacing plus row index x column direction x row spacing
    (PS3.3 C.7.6.2.1.1). When the volume is the slices reoriented (no resampling) every pixel
    lands on a voxel centre, so the frames hold exactly the mask's voxels.
    """
    to_voxel = np.linalg.inv(affine) @ _LPS_TO_RAS
    frames = []
    for ds in slices:
        orientation = _floats(ds, "ImageOrientationPatient", 6)
        row_spacing, col_spacing = _floats(ds, "PixelSpacing", 2)
        rows, cols = int(ds.Rows), int(ds.Columns)
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        lps = (
            _floats(ds, "ImagePositionPatient", 3)[:, None, None]
            + orientation[:3, None, None] * (c * col_spacing)[None]
            + orientation[3:, None, None] * (r * row_spacing)[None]
        )
        points = np.concatenate([lps, np.ones((1, rows, cols))]).reshape(4, -1)
        index = np.rint(to_voxel @ points)[:3].astype(np.int64)
        inside = np.all((index >= 0) & (index < np.asarray(mask.shape)[:, None]), axis=0)
        frame = np.zeros(rows * cols, dtype=bool)
        frame[inside] = mask[index[0, inside], index[1, inside], index[2, inside]]
        frames.append(frame.reshape(rows, cols))
    return np.stack(frames)


def mask_nifti(mask: NDArray[np.bool_], affine: NDArray[np.float64]) -> bytes:
    """A mask as gzipped NIfTI-1 (uint8, 1 inside), with the volume's affine."""
    nibabel: Any = importlib.import_module("nibabel")

    image = nibabel.Nifti1Image(mask.astype(np.uint8), affine)
    image.header.set_data_dtype(np.uint8)
    return gzip.compress(image.to_bytes(), compresslevel=6)
