"""Image decoding and preprocessing for every model family, torch-free (numpy + Pillow).

``ImageSpec`` is a model's pipeline as data (a bundle's manifest describes it), and ``preprocess`` is its
one implementation: resize — ``squash`` to a square, ``shortest_edge`` then centre crop, or ``fixed`` to
(h, w) then centre crop — with Pillow's bicubic or bilinear filter, then mean/std or rescale-with-offset.
On RGB and greyscale ("L") images it equals, within float32 rounding:

- Chinese-CLIP's official transform — ``Resize((R, R), BICUBIC)`` on the PIL image (torchvision hands PIL
  images to ``Image.resize``), ``convert("RGB")``, ``ToTensor``, ``Normalize`` with the CLIP mean/std —
  bit for bit;
- ``transformers``' PIL-backend ``CLIPImageProcessor`` (AltCLIP: shortest edge, centre crop) and
  ``EfficientNetImageProcessor`` as ALIGN configures it (346×346 bilinear, crop 289, x / 127.5 - 1),
  whose centre crop starts at ``(side - crop) // 2``.

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
from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Formats a browser or phone uploads. Others (EPS runs Ghostscript, PSD, ICO, ...) are refused.
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})

ResizeMode = Literal["squash", "shortest_edge", "fixed"]
Resample = Literal["bicubic", "bilinear"]
_RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
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
class Rescale:
    """``x * scale + offset`` on 0..255 values (ALIGN: x / 127.5 - 1), instead of mean/std."""

    scale: float
    offset: float


@dataclass(frozen=True)
class ImageSpec:
    """How a model wants its pixels: a ``size``×``size`` input made by ``resize`` (+ a centre crop).

    ``resize_size``: ``squash`` — None (the image is squashed to ``size``); ``shortest_edge`` — the short
    side's length, the long side keeping the aspect ratio (``int(s * long / short)``, as transformers);
    ``fixed`` — ``(height, width)``. Normalisation: per-channel ``mean``/``std`` on [0, 1] values (default
    CLIP's), or ``rescale``.
    """

    size: int
    resize: ResizeMode = "squash"
    resize_size: int | tuple[int, int] | None = None
    resample: Resample = "bicubic"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    rescale: Rescale | None = None

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"image size must be positive, got {self.size}")
        if self.resize not in _RESIZE_MODES:
            raise ValueError(f"resize {self.resize!r} is not one of {list(_RESIZE_MODES)}")
        if self.resample not in _RESAMPLE:
            raise ValueError(f"resample {self.resample!r} is not one of {sorted(_RESAMPLE)}")
        self._check_resize_size()
        if self.rescale is not None:
            if self.mean is not None or self.std is not None:
                raise ValueError("give either mean/std or rescale, not both")
            return
        mean, std = self.mean or CLIP_MEAN, self.std or CLIP_STD
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("mean and std need one value per RGB channel")
        object.__setattr__(self, "mean", tuple(float(m) for m in mean))
        object.__setattr__(self, "std", tuple(float(s) for s in std))

    def _check_resize_size(self) -> None:
        rs = self.resize_size
        if self.resize == "squash":
            if rs is not None and rs != self.size:
                raise ValueError(
                    f"squash resizes to size x size; resize_size must be {self.size} or None, got {rs}"
                )
            object.__setattr__(self, "resize_size", None)  # one spelling, so equal specs compare equal
            return
        if self.resize == "shortest_edge":
            ok = isinstance(rs, int) and rs >= self.size
            want = f"an int >= size ({self.size}): the short side after resizing"
        else:
            ok = isinstance(rs, tuple) and len(rs) == 2 and min(rs) >= self.size
            want = f"(height, width), each >= size ({self.size})"
        if not ok:
            raise ValueError(f"resize {self.resize!r} needs resize_size {want}, got {rs!r}")

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of a ``width``×``height`` image after the resize, before the centre crop."""
        if self.resize == "squash":
            return self.size, self.size
        if isinstance(self.resize_size, tuple):  # fixed
            return self.resize_size[1], self.resize_size[0]
        assert self.resize_size is not None
        short, long = sorted((width, height))
        new_long = int(self.resize_size * long / short)  # transformers' formula, truncating
        return (self.resize_size, new_long) if width <= height else (new_long, self.resize_size)

    @property
    def decode_min_side(self) -> int:
        """For ``decode_image(reduce_to=...)``: twice the resize target, so the final resize still averages
        over source pixels (the resize, not the crop: shortest_edge and fixed resize to more than size)."""
        if isinstance(self.resize_size, tuple):
            return 2 * max(self.resize_size)
        return 2 * (self.resize_size or self.size)

    @cached_property
    def lookup(self) -> np.ndarray:
        """float32 [3, 256]: the normalised value of each byte per channel, computed with the same float32
        operations as the references (ToTensor + Normalize: x / 255, - mean, / std; transformers' rescale:
        x * scale in float64 cast to float32, then + offset), so a table lookup is bit-identical."""
        if self.rescale is not None:
            scaled = (np.arange(256, dtype=np.float64) * self.rescale.scale).astype(np.float32)
            return np.tile(scaled + np.float32(self.rescale.offset), (3, 1))
        assert self.mean is not None and self.std is not None
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
    Pass ``ImageSpec.decode_min_side`` (2 x the resize target) or more, so the final resize still
    averages; None decodes in full (the official path, used for training, parity and `tuwen embed`).
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
        ImageOps.exif_transpose(image, in_place=True)  # not a copy: that would cost a sixth of the decode
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
    """float32 ``[N, 3, size, size]`` pixel values for the image tower: ``normalize`` of ``resize_crop``.

    RGB and L images follow the references exactly (resized in their own mode, then RGB); other modes go
    through ``to_rgb`` first.
    """
    pixels = np.empty((len(images), spec.size, spec.size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        pixels[i] = resize_crop(image, spec)
    return normalize(pixels, spec)


def resize_crop(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """uint8 ``[size, size, 3]``: ``preprocess``'s resize and centre crop, before normalisation. Apart, the
    two let `tuwen index` ship a quarter of the bytes between its decode tasks and its model actors."""
    if image.mode not in ("RGB", "L"):
        image = to_rgb(image)
    pixels = _resize_and_crop(image, spec)
    if pixels.ndim == 2:  # grey: the references' convert("RGB") copies the one channel three times
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels


def normalize(pixels: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """float32 ``[N, 3, size, size]`` from ``resize_crop``'s uint8 ``[N, size, size, 3]`` (``spec.lookup``)."""
    if pixels.ndim != 4 or pixels.shape[1:] != (spec.size, spec.size, 3) or pixels.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 pixels [N, {spec.size}, {spec.size}, 3], got {pixels.dtype} {list(pixels.shape)}"
        )
    out = np.empty((len(pixels), 3, spec.size, spec.size), dtype=np.float32)
    lookup = spec.lookup
    for i in range(len(pixels)):
        for c in range(3):
            np.take(lookup[c], pixels[i, :, :, c], out=out[i, c])
    return out


# Beyond this many crop areas, an enlargement computes only the crop (see _resize_and_crop): a 1×10000
# upload resized to a 224 shortest edge would otherwise allocate 224 × 2,240,000 pixels. (A reduction
# never makes more pixels than the decoded image has.)
_FULL_RESIZE_CROPS = 16


def _resize_and_crop(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """uint8 ``[size, size(, 3)]``: the resize, then the centre crop at ``(side - size) // 2``."""
    size, resample = spec.size, _RESAMPLE[spec.resample]
    width, height = image.size
    new_w, new_h = spec.resized_size(width, height)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    enlarging = new_w >= width and new_h >= height
    if not enlarging or new_w * new_h <= _FULL_RESIZE_CROPS * size * size:
        resized = image.resize((new_w, new_h), resample) if (new_w, new_h) != image.size else image
        return np.asarray(resized)[top : top + size, left : left + size]
    # Pillow enlarges horizontally, then vertically, rounding to 8 bits in between (a reduction may go
    # vertical first: not emulated); each output pixel of a pass depends on one row (column) only, so
    # computing just the crop's columns, then its rows, is exact (tests/service/test_image_preprocessing.py).
    pixels = np.asarray(image)
    pixels = _resample_axis(pixels, 1, new_w, left, size, resample) if new_w != width else pixels[:, left:]
    pixels = _resample_axis(pixels, 0, new_h, top, size, resample) if new_h != height else pixels[top:]
    return pixels[:size, :size]


_PRECISION_BITS = 22  # Pillow's Resample.c: 32 - 8 - 2 bits of fixed-point coefficients


def _bicubic(x: np.ndarray) -> np.ndarray:
    x, a = np.abs(x), -0.5
    inner = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    outer = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, inner, np.where(x < 2.0, outer, 0.0))


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


_FILTERS = {Image.Resampling.BICUBIC: (_bicubic, 2.0), Image.Resampling.BILINEAR: (_bilinear, 1.0)}


def _resample_axis(
    pixels: np.ndarray, axis: int, out_size: int, start: int, count: int, resample: Image.Resampling
) -> np.ndarray:
    """Outputs ``start .. start + count`` of Pillow's 8-bit resample of ``axis`` to ``out_size``, bit for bit:
    the same float64 coefficients (``precompute_coeffs``), rounded to the same fixed point
    (``normalize_coeffs_8bpc``), accumulated and clipped as ``ResampleHorizontal/Vertical_8bpc`` do."""
    filter_fn, support = _FILTERS[resample]
    in_size = pixels.shape[axis]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    center = (np.arange(start, start + count, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C's (int) truncates, like astype
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    weights = filter_fn((taps[None, :] + xmin[:, None] - center[:, None] + 0.5) * (1.0 / filterscale))
    weights = np.where(taps[None, :] < xmax[:, None], weights, 0.0)
    total = np.zeros(count)
    for k in range(ksize):  # summed in C's order: float addition is not associative
        total = total + weights[:, k]
    weights = np.where(total[:, None] != 0.0, weights / np.where(total == 0.0, 1.0, total)[:, None], weights)
    one = float(1 << _PRECISION_BITS)
    fixed = np.where(weights < 0, -0.5 + weights * one, 0.5 + weights * one).astype(np.int64)
    index = np.minimum(xmin[:, None] + taps[None, :], in_size - 1)  # taps past xmax have weight 0
    source = np.moveaxis(pixels, axis, 0)
    acc = np.full((count, *source.shape[1:]), 1 << (_PRECISION_BITS - 1), dtype=np.int64)
    broadcast = (slice(None),) + (None,) * (source.ndim - 1)
    for k in range(ksize):
        acc += source[index[:, k]].astype(np.int64) * fixed[:, k][broadcast]
    return np.moveaxis(np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8), 0, axis)
