"""Series -> volume: slice order from geometry, orientation to RAS, statistics, mask clean-up."""

import random

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from inference import volumes
from inference.errors import CannotDecode
from integration.models.manifest import Preprocessing

# A RAS volume with 1 mm voxels whose corner voxel sits at RAS (-3, -2, -1) mm.
RAS = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
AFFINE = np.array([[1, 0, 0, -3], [0, 1, 0, -2], [0, 0, 1, -1], [0, 0, 0, 1]], dtype=np.float64)


def _slices(row_dir: list[float], col_dir: list[float]) -> list[Dataset]:
    """Slice the RAS volume along the normal of (row_dir, col_dir), given in DICOM LPS, as a scanner would."""
    row, col = np.array(row_dir), np.array(col_dir)
    normal = np.cross(row, col)
    inverse = np.linalg.inv(AFFINE)
    to_lps = np.diag([-1.0, -1.0, 1.0])
    corners = [to_lps @ (AFFINE @ [i, j, k, 1])[:3] for i in (0, 4) for j in (0, 3) for k in (0, 2)]
    extent = [min(c @ d for c in corners) for d in (row, col, normal)]
    sizes = [round(max(c @ d for c in corners) - lo) + 1 for d, lo in zip((row, col, normal), extent, strict=True)]
    out = []
    for k in range(sizes[2]):
        origin = extent[0] * row + extent[1] * col + (extent[2] + k) * normal
        pixels = np.zeros((sizes[1], sizes[0]), dtype=np.uint16)
        for r in range(sizes[1]):
            for c in range(sizes[0]):
                lps = origin + c * row + r * col
                i, j, kk = np.rint(inverse @ [*(to_lps @ lps), 1])[:3].astype(int)
                pixels[r, c] = RAS[i, j, kk]
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.ImageOrientationPatient = [*row_dir, *col_dir]
        ds.ImagePositionPatient = [float(v) for v in origin]
        ds.PixelSpacing = [1.0, 1.0]
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels.tobytes()
        ds.InstanceNumber = sizes[2] - k
        out.append(ds)
    random.Random(k).shuffle(out)
    return out


@pytest.mark.parametrize(
    ("row_dir", "col_dir"),
    [
        ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]),  # axial
        ([0.0, 1.0, 0.0], [0.0, 0.0, -1.0]),  # sagittal
        ([1.0, 0.0, 0.0], [0.0, 0.0, -1.0]),  # coronal
        ([-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]),  # axial, rows running right
    ],
)
def test_any_slice_orientation_and_order_comes_back_as_the_ras_volume(row_dir: list[float], col_dir: list[float]) -> None:
    volume = volumes.assemble(_slices(row_dir, col_dir), Preprocessing(kind="volume", normalisation="none"))
    np.testing.assert_array_equal(volume.array, RAS)
    np.testing.assert_allclose(volume.affine, AFFINE, atol=1e-6)
    assert volume.spacing == (1.0, 1.0, 1.0)


def test_lps_orientation_and_a_duplicate_slice() -> None:
    slices = _slices([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    lps = volumes.assemble(slices, Preprocessing(kind="volume", normalisation="none", orientation="LPS"))
    np.testing.assert_array_equal(lps.array, RAS[::-1, ::-1, :])
    with pytest.raises(CannotDecode, match="share one position"):
        volumes.assemble([*slices, slices[0]], Preprocessing(kind="volume"))


def test_statistics_and_mask_clean_up() -> None:
    slices = _slices([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    stats = volumes.statistics(slices, ["mean", "std", "min", "max"])
    np.testing.assert_allclose(stats, [RAS.mean(), RAS.std(), 0, RAS.max()], rtol=1e-6)
    mask = np.zeros((7, 7, 7), dtype=bool)
    mask[1:6, 1:6, 1:6] = True
    mask[3, 3, 3] = False  # a hole
    mask[0, 0, 6] = True  # a speck
    cleaned = volumes.clean_mask(mask, largest_component=True, fill_holes=True)
    assert cleaned.sum() == 125 and cleaned[3, 3, 3] and not cleaned[0, 0, 6]
