"""PyTorch: deepbet 1.0.2 brain extraction on T1 MR (TorchScript), total intracranial volume out.

deepbet ships two TorchScript nets: one finds the brain's bounding box on a 128^3 copy of the
volume, the other segments the box resampled to 256^3. Its Python code glues them together;
here that glue is scripted into one TorchScript module around the two nets, so the engine runs
it as any other TorchScript artifact. It differs from deepbet's own code in one step: the
bounding box comes from the thresholded coarse mask without deepbet's largest-component
filter (not expressible in TorchScript); its 2 % occupancy rule already ignores specks.
"""

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from inference.errors import UnknownModel
from inference.packages.installed import package_dir
from storage.fhir.systems import LOINC_SYSTEM, SNOMED_SYSTEM, V2_0074_SYSTEM
from integration.models.manifest import Accepts, Manifest, OutputLabel, Postprocessing, Preprocessing, SeriesSelection
from integration.messages import Coding

VERSION = "1.0.2"
ARTIFACT = f"deepbet-{VERSION}.pt"


class BrainExtraction(torch.nn.Module):
    """(batch, 1, x, y, z) T1 volume in RAS orientation -> brain probability of every voxel."""

    def __init__(self, bbox_model: torch.nn.Module, mask_model: torch.nn.Module) -> None:
        super().__init__()
        self.bbox_model = bbox_model
        self.mask_model = mask_model

    def _normalise(self, x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        # deepbet.utils.normalize: clip to the 0.5..99.5 percentile range, standardise, then the
        # ImageNet grey mean/std its nets were trained with.
        x = ((x - low) / (high - low)).clamp(0.0, 1.0)
        x = (x - x.mean()) / x.std()
        return 0.226 * x + 0.449

    def _extent(self, profile: torch.Tensor, n: int, scale: float) -> tuple[int, int]:
        # deepbet BrainExtraction.get_bbox_with_margin: planes over 2 % brain, 10 % margin each side.
        found = torch.where(profile > 0.02)[0]
        low = float(found.min())
        high = float(found.max()) + 1.0
        center = float(round((low + high) / 2.0 * scale))
        size = float(round((high - low) * scale * 1.2))
        return max(0, int(center - size / 2.0)), min(n, int(center + size / 2.0))

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        out = []
        for b in range(volume.shape[0]):
            x = torch.nan_to_num(volume[b, 0])
            small = F.interpolate(x[None, None], size=[128, 128, 128], mode="nearest-exact")[0, 0]
            low = small.quantile(0.005)
            high = small.quantile(0.995)
            coarse = (self.bbox_model(self._normalise(small, low, high)[None, None])[0, 1] > 0.5).float()
            s = x.shape
            x0, x1 = self._extent(coarse.mean((1, 2)), s[0], s[0] / 128.0)
            y0, y1 = self._extent(coarse.mean((0, 2)), s[1], s[1] / 128.0)
            z0, z1 = self._extent(coarse.mean((0, 1)), s[2], s[2] / 128.0)
            box = F.interpolate(x[x0:x1, y0:y1, z0:z1][None, None], size=[256, 256, 256], mode="nearest-exact")
            fine = self.mask_model(self._normalise(box, low, high))[0, 1]
            mask = torch.zeros_like(x)
            mask[x0:x1, y0:y1, z0:z1] = F.interpolate(
                fine[None, None], size=[x1 - x0, y1 - y0, z1 - z0], mode="nearest-exact"
            )[0, 0]
            out.append(mask)
        return torch.stack(out)[:, None]


def package(scratch: Path) -> tuple[Manifest, Path]:
    """The manifest and one TorchScript file built from deepbet's two nets (once per scratch dir)."""
    nets = package_dir("deepbet").parent / "data" / "models"
    if not (nets / "model.pt").is_file() or not (nets / "bbox_model.pt").is_file():
        raise UnknownModel("deepbet's data/models/model.pt and bbox_model.pt are not installed")
    artifact = scratch / ARTIFACT
    if not artifact.is_file():
        scratch.mkdir(parents=True, exist_ok=True)
        jit: Any = torch.jit  # untyped in torch's stubs
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript in favour of torch.export, which cannot express
            # deepbet's data-dependent crop; TorchScript is what deepbet ships.
            warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
            bbox = jit.load(str(nets / "bbox_model.pt"), map_location="cpu").eval()
            mask = jit.load(str(nets / "model.pt"), map_location="cpu").eval()
            scripted = jit.script(BrainExtraction(bbox, mask).eval())
            partial = artifact.with_suffix(".partial")
            scripted.save(str(partial))
        partial.replace(artifact)
    return manifest(), artifact


def manifest() -> Manifest:
    """The package's manifest (its artifact is built by `package`)."""
    brain = Coding(system=SNOMED_SYSTEM, code="12738006", display="Brain structure")
    return Manifest(
        name="brain-extraction",
        version=VERSION,
        framework="torch",
        task="measurement",
        # T1 brain MR; the series with the most slices (the 3-D acquisition, not the localiser).
        accepts=Accepts(
            modalities=["MR"],
            body_parts=["BRAIN", "HEAD"],
            series=SeriesSelection(min_instances=16, choose="most-instances"),
        ),
        # deepbet reads the volume in RAS+ (nibabel's as_closest_canonical) at its own spacing.
        preprocessing=Preprocessing(kind="volume", normalisation="none", orientation="RAS"),
        postprocessing=Postprocessing(mask_threshold=0.5, largest_component=True, fill_holes=True),
        outputs=[
            OutputLabel(concept=brain),
            # TIV is the mask's volume (deepbet: voxel count x voxel volume / 1000). DICOM codes
            # volumes as (118565006, SCT, "Volume") (PS3.16 TID 1419); cm3 is UCUM's cubic centimetre.
            OutputLabel(
                concept=Coding(system=SNOMED_SYSTEM, code="118565006", display="Volume"),
                unit="cm3",
                text="Total intracranial volume",
            ),
        ],
        report_code=Coding(system=LOINC_SYSTEM, code="18748-4", display="Diagnostic imaging study"),
        report_category=Coding(system=V2_0074_SYSTEM, code="RAD", display="Radiology"),
        clinical_use=False,
        artifact=ARTIFACT,
    )
