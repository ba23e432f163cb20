"""Image decoding and CLIP preprocessing, torch-free (numpy + Pillow).

``preprocess`` equals the official Chinese-CLIP transform — ``Resize((R, R), BICUBIC)`` on the PIL image
(torchvision hands PIL images to ``Image.resize``), ``convert("RGB")``, ``ToTensor``, ``Normalize`` with
the CLIP mean/std — bit for bit on RGB and greyscale ("L") images.

Where the official transform is wrong for real uploads, ``to_rgb`` (used by ``decode_image``, and by
``preprocess`` for any image that is not already RGB or L) does better, converting to RGB *before*
the resize:

- EXIF orientation is applied (``decode_image`` only): phone photos are otherwise sideways.
- Alpha is composited over white: ``convert("RGB")`` drops alpha, so transparent pixels show whatever
  colour they happen to hold (often black).
- Palette ("P") and bilevel ("1") images are converted first: Pillow resizes them nearest-neighbour.
- 16-bit greyscale ("I;16*", and "I" as Pillow opens 16-bit PNGs) is scaled by 255/65535: the official
  path clips every value above 255 to white.
- CMYK is converted through its embedded ICC profile when there is one (else Pillow's formula),
  before resizing rather than resizing four ink channels.

The service also decodes large JPEGs at a reduced DCT scale (``decode_image``'s ``reduce_to``): a
speed/exactness trade it makes for uploads only; training, parity checks and `tuwen embed` decode in full.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Formats a browser or phone uploads. Others (EPS runs Ghostscript, PSD, ICO, ...) are refused.
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}
ErrorCode = Literal[
    "image_empty", "image_unreadable", "image_too_large", "image_too_many_pixels", "image_format_unsupported"
]


class ImageError(ValueError):
    """An image that cannot be used; ``code`` is stable (the API returns it), ``message`` says why."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ImageSpec:
    """How a model wants its pixels: a ``size``×``size`` square, per-channel mean/std on [0, 1] values."""

    size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resize: str = "bicubic"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"image size must be positive, got {self.size}")
        if self.resize not in _RESAMPLE:
            raise ValueError(f"resize {self.resize!r} is not one of {sorted(_RESAMPLE)}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need one value per RGB channel")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @cached_property
    def lookup(self) -> np.ndarray:
        """float32 [3, 256]: the normalised value of each byte per channel, computed with the same float32
        operations as ToTensor + Normalize (x / 255, - mean, / std), so a table lookup is bit-identical."""
        values = np.arange(256, dtype=np.float32) / np.float32(255)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None]
        return (values[None, :] - mean) / std


def _open(data: bytes, max_pixels: int | None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Our own pixel limit decides; Pillow's bomb warning must become an answer, not a log line.
            # (catch_warnings swaps the process-wide filter list: threads racing here can at worst leave
            # this same "error" filter installed, which is the behaviour wanted anyway.)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("image_too_many_pixels", f"the image is too large to decode safely ({e})") from e
    except UnidentifiedImageError as e:
        raise ImageError("image_unreadable", "the data is not an image in a format Pillow recognises") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError("image_unreadable", f"the image header is corrupt ({e})") from e
    if image.format not in SUPPORTED_FORMATS:
        raise ImageError(
            "image_format_unsupported",
            f"{image.format} images are not accepted; send one of {', '.join(sorted(SUPPORTED_FORMATS))}",
        )
    width, height = image.size
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if limit is not None and width * height > limit:
        raise ImageError(
            "image_too_many_pixels",
            f"the image is {width}×{height} = {width * height:,} pixels; the limit is {limit:,}",
        )
    return image


def decode_image(
    data: bytes | Path,
    *,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
    reduce_to: int | None = None,
) -> Image.Image:
    """Decode an uploaded image to RGB (see the module docstring for what is done beyond ``convert``).

    The size in bytes and the pixel count (read from the header, before any pixel is decoded) are
    checked against ``max_bytes`` and ``max_pixels`` (default: Pillow's ``MAX_IMAGE_PIXELS``).
    ``reduce_to``: a JPEG at least twice that on both sides is decoded at a reduced DCT scale (1/2, 1/4
    or 1/8) that keeps both sides >= ``reduce_to``. The decoder then skips most of the work: a 12 MP
    photo decodes and preprocesses ~2.7x faster (bench/image_decode.py); once resized to a 224 input it is
    within 5/255 per pixel (mean 0.3/255) of the full decode (tests/service/test_image_preprocessing.py).
    Pass 2 x the model input or more, so the final bicubic resize still averages; None decodes in full
    (the official path, used for training, parity and `tuwen embed`).
    Raises ``ImageError`` with a stable code.
    """
    if isinstance(data, Path):
        path = data
        try:
            size = path.stat().st_size
            if max_bytes is not None and size > max_bytes:
                raise ImageError("image_too_large", f"{path} is {size:,} bytes; the limit is {max_bytes:,}")
            data = path.read_bytes()
        except OSError as e:
            raise ImageError("image_unreadable", f"cannot read {path}: {e.strerror or e}") from e
    if not data:
        raise ImageError("image_empty", "the image is empty (0 bytes)")
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageError("image_too_large", f"the image is {len(data):,} bytes; the limit is {max_bytes:,}")
    image = _open(data, max_pixels)
    try:
        if reduce_to and image.format in ("JPEG", "MPO"):
            image.draft(None, (reduce_to, reduce_to))  # picks the largest scale keeping both sides >= it
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # Truncated or corrupt pixel data: Pillow raises OSError ("image file is truncated") and friends.
        raise ImageError(
            "image_unreadable", f"the {image.format} image data is truncated or corrupt ({e})"
        ) from e


def _composite_over_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _scale_16_bit(image: Image.Image) -> Image.Image:
    values = np.asarray(image).astype(np.float32)
    scaled = np.clip(np.rint(values * (255 / 65535)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L").convert("RGB")


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    icc = image.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            rgb = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            assert rgb is not None  # None only with inPlace=True
            return rgb
        except (ImageCms.PyCMSError, OSError):
            pass  # a broken profile: fall back to Pillow's formula rather than refuse the image
    return image.convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with alpha composited over white, palettes expanded, 16-bit scaled and CMYK converted."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        return _composite_over_white(image)
    if mode.startswith("I;16") or mode == "I":
        return _scale_16_bit(image)
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    try:
        return image.convert("RGB")
    except ValueError as e:
        raise ImageError(
            "image_format_unsupported", f"images in Pillow mode {mode!r} are not supported"
        ) from e


def preprocess(images: Sequence[Image.Image], spec: ImageSpec) -> np.ndarray:
    """float32 ``[N, 3, size, size]`` pixel values for the image tower.

    RGB and L images follow the official transform exactly (resize in their own mode, then RGB); other
    modes go through ``to_rgb`` first.
    """
    out = np.empty((len(images), 3, spec.size, spec.size), dtype=np.float32)
    resample = _RESAMPLE[spec.resize]
    lookup = spec.lookup
    for i, image in enumerate(images):
        if image.mode not in ("RGB", "L"):
            image = to_rgb(image)
        resized = image.resize((spec.size, spec.size), resample)
        pixels = np.asarray(resized)
        if pixels.ndim == 2:  # grey: the official convert("RGB") copies the one channel three times
            for c in range(3):
                np.take(lookup[c], pixels, out=out[i, c])
        else:
            for c in range(3):
                np.take(lookup[c], pixels[:, :, c], out=out[i, c])
    return out
