"""Turn stored DICOM bytes into a model input array: decode, VOI LUT, polarity, resize, normalise.

Pure functions: bytes in, numpy out, no I/O.
"""

from io import BytesIO

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut

from inference.errors import CannotDecode, InputNotAccepted
from integration.models.manifest import Manifest, Preprocessing, Window, accepts

Array = NDArray[np.float32]


def read(data: bytes) -> Dataset:
    """Parse an instance as stored (a DICOM file with its file meta), leniently."""
    try:
        ds = dcmread(BytesIO(data), force=True)
    except Exception as exc:  # pydicom raises many types on garbage; all mean "not DICOM we can read"
        raise CannotDecode(f"not a readable DICOM file: {type(exc).__name__}: {exc}") from exc
    # force=True parses anything; an instance has a SOP Class UID (PS3.3 C.12.1) or pixels.
    if "SOPClassUID" not in ds and "PixelData" not in ds:
        raise CannotDecode("not a DICOM instance: no SOP Class UID and no Pixel Data")
    return ds


def check_accepted(ds: Dataset, manifest: Manifest) -> None:
    """Raise InputNotAccepted unless the instance's own header matches what the model accepts."""
    modality = str(ds.get("Modality", ""))
    body_part = str(ds.get("BodyPartExamined", ""))
    sop_class = str(ds.get("SOPClassUID", ""))
    if not accepts(manifest, modality, body_part, sop_class):
        raise InputNotAccepted(
            f"{manifest.name} does not accept modality {modality!r}, body part {body_part!r}, SOP class {sop_class}"
        )


def grey_unit(ds: Dataset, *, invert_monochrome1: bool = True, window: Window | None = None) -> Array:
    """The first frame as a 2-D greyscale image in 0..1 where 0 is dark (air on a radiograph).

    With `window`, that fixed window (in modality units, e.g. HU) replaces the instance's own VOI.
    """
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # no pixel data, unknown syntax, missing decoder plugin, truncated data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise CannotDecode(
            f"cannot decode pixel data (transfer syntax {syntax}; compressed syntaxes need the "
            f"'imaging' extra): {type(exc).__name__}: {exc}"
        ) from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[0]

    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
        samples = 3
    if samples == 3:
        # Colour (RGB; pydicom already converted YBR to RGB): ITU-R BT.601 luma. The VOI LUT
        # applies to greyscale images only (PS3.3 C.11.2), so there is no window to apply.
        rgb = pixels.astype(np.float64)
        values = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    else:
        # Stored values -> modality values (PS3.3 C.11.1: Rescale Slope/Intercept or Modality
        # LUT), then the VOI LUT or window the modality chose for display (PS3.3 C.11.2:
        # VOI LUT Sequence, else Window Center/Width). With neither, min-max below is the window.
        values = apply_modality_lut(pixels, ds).astype(np.float64)
        if window is None:
            values = apply_voi_lut(values, ds).astype(np.float64)
        else:
            # PS3.3 C.11.2.1.2.1, linear window: values outside [c - w/2, c + w/2] saturate.
            low = window.center - window.width / 2.0
            values = np.clip((values - low) / window.width, 0.0, 1.0)
    if values.ndim != 2:
        raise CannotDecode(f"expected one 2-D frame, got pixel array of shape {values.shape}")

    if window is not None and samples == 1:
        unit = values  # already 0..1 across the fixed window
        if invert_monochrome1 and photometric == "MONOCHROME1":
            unit = 1.0 - unit
        return unit.astype(np.float32)
    # The VOI output range depends on which transform applied (window: the display range;
    # LUT: its descriptor's bit depth), so stretch what came out to 0..1. This equals the
    # window's range when the image reaches both ends of it, as a clinical window does.
    low, high = float(values.min()), float(values.max())
    if not high > low:
        raise CannotDecode("pixel data has no contrast: every pixel has the same value")
    unit = (values - low) / (high - low)
    # PS3.3 C.7.6.3.1.2: MONOCHROME1 means the minimum value is displayed white. Models are
    # trained on MONOCHROME2-like images (air dark), so flip the polarity.
    if invert_monochrome1 and samples == 1 and photometric == "MONOCHROME1":
        unit = 1.0 - unit
    return unit.astype(np.float32)


def model_input(image: Array, pre: Preprocessing) -> Array:
    """Resize a 0..1 greyscale image to the model's size, replicate channels, normalise: (rows, cols, channels)."""
    if pre.size is None:
        raise InputNotAccepted("the manifest gives no image size")
    rows, cols = pre.size
    # PIL's 32-bit float mode keeps full precision; size is (width, height) in PIL.
    resample = Image.Resampling.NEAREST if pre.resample == "nearest" else Image.Resampling.BILINEAR
    resized = np.asarray(Image.fromarray(image.astype(np.float32)).resize((cols, rows), resample), dtype=np.float32)
    resized = np.clip(resized, 0.0, 1.0)
    if pre.normalisation == "xception":
        # keras.applications.xception.preprocess_input on 0..255 is x / 127.5 - 1, i.e. u * 2 - 1 on 0..1.
        resized = resized * 2.0 - 1.0
    stacked = np.repeat(resized[:, :, np.newaxis], pre.channels, axis=2)
    return stacked.astype(np.float32)


def prepare(data: bytes, manifest: Manifest) -> Array:
    """Stored DICOM bytes -> one model input, checking the header against what the model accepts."""
    ds = read(data)
    check_accepted(ds, manifest)
    pre = manifest.preprocessing
    image = grey_unit(ds, invert_monochrome1=pre.invert_monochrome1, window=pre.window)
    return model_input(image, manifest.preprocessing)
