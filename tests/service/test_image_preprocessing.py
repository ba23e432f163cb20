"""Image decoding and preprocessing against the official Chinese-CLIP transform.

``official_transform`` runs the official steps the way ``cn_clip.clip.utils.image_transform`` runs them on
a PIL image: torchvision's ``Resize((R, R), BICUBIC)`` calls ``img.resize((R, R), Image.BICUBIC)``, then
``convert("RGB")``, ``ToTensor`` (uint8 → float32 / 255) and ``Normalize`` (``sub_(mean).div_(std)`` in
float32). ``test_reference_is_the_official_transform`` checks it against the real transform when
``cn_clip.clip`` can be imported (torchvision workaround in peers).
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from images import photo_like
from PIL import Image

from service.preprocessing.image import (
    CLIP_MEAN,
    CLIP_STD,
    ImageError,
    ImageSpec,
    Rescale,
    decode_image,
    normalize,
    preprocess,
    resize_crop,
    to_rgb,
)

SPEC = ImageSpec(size=224)


def official_transform(image: Image.Image, size: int = 224) -> np.ndarray:
    resized = image.resize((size, size), Image.BICUBIC).convert("RGB")
    pixels = np.array(resized, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean = np.asarray(CLIP_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(CLIP_STD, dtype=np.float32)[:, None, None]
    return (pixels - mean) / std


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def random_image(rng: np.random.Generator, width: int, height: int, mode: str = "RGB") -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4, "CMYK": 4, "L": None}[mode]
    shape = (height, width) if channels is None else (height, width, channels)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


SIZES = [(1, 1), (5000, 20), (3, 4000), (224, 224), (641, 479), (97, 1003), (2, 3)]


def test_reference_is_the_official_transform() -> None:
    try:
        from peers import import_cn_clip

        cn_clip = import_cn_clip()
    except ImportError as e:
        pytest.skip(f"cn_clip.clip cannot be imported here: {e}")
    rng = np.random.default_rng(3)
    for mode, (w, h) in [("RGB", (37, 91)), ("L", (300, 7)), ("RGB", (1, 1))]:
        image = random_image(rng, w, h, mode)
        theirs = cn_clip.image_transform(224)(image).numpy()
        assert max_diff(official_transform(image), theirs) == 0.0


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize(("width", "height"), SIZES)
def test_preprocess_equals_official(mode: str, width: int, height: int) -> None:
    image = random_image(np.random.default_rng(width * 7919 + height), width, height, mode)
    ours = preprocess([image], SPEC)
    assert ours.shape == (1, 3, 224, 224) and ours.dtype == np.float32
    assert max_diff(ours[0], official_transform(image)) <= 1e-6


def test_batch_and_other_specs() -> None:
    rng = np.random.default_rng(0)
    images = [random_image(rng, 50 + i, 40, "RGB" if i % 2 else "L") for i in range(5)]
    spec = ImageSpec(size=64)
    ours = preprocess(images, spec)
    assert ours.shape == (5, 3, 64, 64)
    for i, image in enumerate(images):
        assert max_diff(ours[i], official_transform(image, 64)) <= 1e-6
    assert preprocess([], spec).shape == (0, 3, 64, 64)
    with pytest.raises(ValueError, match="resize"):
        ImageSpec(size=64, resize="area")


def test_resize_crop_then_normalize_is_preprocess() -> None:
    """`tuwen index` runs the two halves in different processes: together they must be preprocess."""
    rng = np.random.default_rng(5)
    spec = ImageSpec(size=32, resize="shortest_edge", resize_size=40)
    images = [random_image(rng, 70, 45), random_image(rng, 30, 90, "L"), random_image(rng, 50, 50, "RGBA")]
    halves = [resize_crop(image, spec) for image in images]
    assert all(h.dtype == np.uint8 and h.shape == (32, 32, 3) for h in halves)
    grey = halves[1]
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 0], grey[..., 2])
    assert np.array_equal(normalize(np.stack(halves), spec), preprocess(images, spec))
    with pytest.raises(ValueError, match=r"uint8 pixels \[N, 32, 32, 3\], got float32 \[2, 3, 32, 32\]"):
        normalize(np.zeros((2, 3, 32, 32), np.float32), spec)


def test_decode_lossless_rgb_and_grey_then_official_parity() -> None:
    rng = np.random.default_rng(1)
    rgb, grey = random_image(rng, 33, 21), random_image(rng, 19, 40, "L")
    decoded = decode_image(encode(rgb))
    assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), np.asarray(rgb))
    decoded_grey = decode_image(encode(grey))
    assert decoded_grey.mode == "RGB"
    assert max_diff(preprocess([decoded_grey], SPEC)[0], official_transform(grey)) <= 1e-6


def test_decode_from_path_and_jpeg(tmp_path) -> None:
    image = random_image(np.random.default_rng(2), 64, 48)
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(image, "JPEG", quality=90))
    decoded = decode_image(path)
    assert decoded.size == (64, 48)
    assert np.array_equal(np.asarray(decoded), np.asarray(Image.open(path).convert("RGB")))


# ---- documented deviations: each compared with the official transform on the correctly converted image


def test_exif_orientation_is_applied() -> None:
    upright = random_image(np.random.default_rng(4), 40, 30)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a phone writes: pixels sideways ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... and Orientation = "rotate 90° clockwise to display"
    decoded = decode_image(encode(stored, "PNG", exif=exif))
    assert np.array_equal(np.asarray(decoded), np.asarray(upright))
    assert max_diff(preprocess([decoded], SPEC)[0], official_transform(upright)) <= 1e-6
    assert max_diff(official_transform(stored), official_transform(upright)) > 0.1  # official: sideways


def test_alpha_is_composited_over_white() -> None:
    rng = np.random.default_rng(5)
    rgba = np.asarray(random_image(rng, 31, 17, "RGBA")).copy()
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
    alpha = rgba[..., 3:].astype(np.float64) / 255
    expected = np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    decoded = np.asarray(decode_image(encode(Image.fromarray(rgba, "RGBA"))))
    assert np.abs(decoded.astype(int) - expected).max() <= 1  # Pillow's integer blend rounds its own way
    assert decoded[0, 0].tolist() == [255, 255, 255] and decoded[0, 1].tolist() == rgba[0, 1, :3].tolist()
    correct = Image.fromarray(expected)
    ours = preprocess([Image.fromarray(decoded)], SPEC)[0]
    one_level = 1 / 255 / min(CLIP_STD) + 1e-6
    assert max_diff(ours, official_transform(correct)) <= one_level
    assert max_diff(official_transform(Image.fromarray(rgba, "RGBA")), official_transform(correct)) > 0.5


def test_palette_is_converted_before_resizing() -> None:
    x, y = np.meshgrid(np.arange(0, 256, 4), np.arange(0, 256, 4))
    rgb = Image.fromarray(np.dstack([x, y, np.full_like(x, 128)]).astype(np.uint8))
    palette = rgb.quantize(colors=64)
    decoded = decode_image(encode(palette))
    correct = palette.convert("RGB")
    assert max_diff(preprocess([decoded], SPEC)[0], official_transform(correct)) <= 1e-6
    assert max_diff(preprocess([palette], SPEC)[0], official_transform(correct)) <= 1e-6
    assert max_diff(official_transform(palette), official_transform(correct)) > 0.01  # nearest-neighbour


def test_palette_with_transparency_and_grey_alpha() -> None:
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    palette.info["transparency"] = 1
    assert np.asarray(decode_image(encode(palette, transparency=1))).tolist() == [[[255, 255, 255]] * 8] * 8
    la = Image.fromarray(np.dstack([np.full((4, 4), 10), np.full((4, 4), 0)]).astype(np.uint8), "LA")
    assert (np.asarray(decode_image(encode(la))) == 255).all()


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    values = np.random.default_rng(6).integers(0, 65536, (45, 70), dtype=np.uint16)
    image16 = Image.fromarray(values)
    decoded = decode_image(encode(image16))
    correct = Image.fromarray(np.rint(values / 65535 * 255).astype(np.uint8), "L")
    assert np.array_equal(np.asarray(decoded)[..., 0], np.asarray(correct))
    assert max_diff(preprocess([decoded], SPEC)[0], official_transform(correct)) <= 1e-6
    reopened = Image.open(io.BytesIO(encode(image16)))
    assert reopened.mode.startswith("I")
    assert max_diff(preprocess([reopened], SPEC)[0], official_transform(correct)) <= 1e-6


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_is_converted_before_resizing(fmt: str) -> None:
    cmyk = random_image(np.random.default_rng(7), 30, 50, "CMYK")
    data = encode(cmyk, fmt)
    reopened = Image.open(io.BytesIO(data))
    assert reopened.mode == "CMYK"
    correct = reopened.convert("RGB")
    decoded = decode_image(data)
    assert np.array_equal(np.asarray(decoded), np.asarray(correct))
    assert max_diff(preprocess([decoded], SPEC)[0], official_transform(correct)) <= 1e-6
    assert max_diff(preprocess([reopened], SPEC)[0], official_transform(correct)) <= 1e-6


def test_to_rgb_keeps_rgb_untouched() -> None:
    image = random_image(np.random.default_rng(8), 3, 3)
    assert to_rgb(image) is image


# ---- limits and errors


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width``×``height`` pixels but holds none: only the header may be read."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def error_code(data, **limits) -> str:
    with pytest.raises(ImageError) as caught:
        decode_image(data, **limits)
    assert caught.value.message and caught.value.code in str(caught.value)
    return caught.value.code


def test_error_codes(tmp_path) -> None:
    good = encode(random_image(np.random.default_rng(9), 20, 20), "JPEG")
    assert error_code(b"") == "image_empty"
    assert error_code(b"definitely not an image") == "image_unreadable"
    assert error_code(good[: len(good) // 2]) == "image_unreadable"
    png = encode(random_image(np.random.default_rng(9), 20, 20))
    assert error_code(png[:60]) == "image_unreadable"
    assert error_code(good, max_bytes=100) == "image_too_large"
    path = tmp_path / "big.jpg"
    path.write_bytes(good)
    assert error_code(path, max_bytes=100) == "image_too_large"
    assert error_code(tmp_path / "missing.jpg") == "image_unreadable"
    assert error_code(good, max_pixels=399) == "image_too_many_pixels"
    assert decode_image(good, max_pixels=400).size == (20, 20)
    assert error_code(encode(Image.new("RGB", (16, 16)), "ICO")) == "image_format_unsupported"


def test_pixel_limit_is_checked_from_the_header() -> None:
    # 30000 × 30000 would need 2.7 GB decoded; the header alone must decide.
    assert error_code(png_header_only(30000, 30000), max_pixels=10_000_000) == "image_too_many_pixels"
    assert error_code(png_header_only(1000, 1000), max_pixels=999_999) == "image_too_many_pixels"


@pytest.mark.parametrize("side", [10_000, 30_000])  # above Pillow's warning limit, above its error limit
def test_pillow_bomb_checks_do_not_leak(side: int) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert error_code(png_header_only(side, side)) == "image_too_many_pixels"
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_large_jpegs_decode_at_a_reduced_scale_close_to_the_full_decode() -> None:
    spec = ImageSpec(224)
    data = encode(photo_like(np.random.default_rng(3), 1920, 1080), "JPEG", quality=90)
    reduced = decode_image(data, reduce_to=448)
    assert reduced.size == (960, 540)  # 1/2 scale: 1/4 would make the short side 270 < 448
    full, fast = preprocess([decode_image(data)], spec)[0], preprocess([reduced], spec)[0]
    levels = np.abs(full - fast) * np.array(spec.std, np.float32)[:, None, None] * 255  # back to 0..255
    assert levels.max() <= 6 and levels.mean() <= 0.5


def test_reduced_decoding_leaves_small_jpegs_and_other_formats_untouched() -> None:
    rng = np.random.default_rng(4)
    small = encode(photo_like(rng, 800, 600), "JPEG", quality=90)  # < 2 x 448 on the short side
    png = encode(photo_like(rng, 1920, 1080), "PNG")
    for data in (small, png):
        assert np.array_equal(np.asarray(decode_image(data, reduce_to=448)), np.asarray(decode_image(data)))


def test_reduced_decoding_still_applies_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(photo_like(np.random.default_rng(5), 1920, 1080), "JPEG", exif=exif)
    assert decode_image(data, reduce_to=448).size == (540, 960)


# ---- the other families' pipelines against transformers' image processors (PIL backend)


def _hf_processors() -> dict[str, tuple[ImageSpec, object]]:
    clip_pil = pytest.importorskip("transformers.models.clip.image_processing_pil_clip")
    effnet_pil = pytest.importorskip("transformers.models.efficientnet.image_processing_pil_efficientnet")
    altclip = clip_pil.CLIPImageProcessorPil(
        do_resize=True, size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=3
    )
    # shortest edge larger than the crop: both axes are cropped
    clip_256 = clip_pil.CLIPImageProcessorPil(
        do_resize=True, size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, resample=3
    )
    # as kakaobrain/align-base's preprocessor_config.json configures it
    align = effnet_pil.EfficientNetImageProcessorPil(
        do_resize=True,
        size={"height": 346, "width": 346},
        resample=2,
        do_center_crop=True,
        crop_size={"height": 289, "width": 289},
        do_rescale=True,
        rescale_factor=1 / 127.5,
        rescale_offset=True,
        do_normalize=False,
        include_top=False,
    )
    return {
        "altclip": (ImageSpec(224, resize="shortest_edge", resize_size=224), altclip),
        "clip-256-crop-224": (ImageSpec(224, resize="shortest_edge", resize_size=256), clip_256),
        "align": (
            ImageSpec(
                289,
                resize="fixed",
                resize_size=(346, 346),
                resample="bilinear",
                rescale=Rescale(1 / 127.5, -1.0),
            ),
            align,
        ),
    }


@pytest.fixture(scope="module")
def hf_processors() -> dict[str, tuple[ImageSpec, object]]:
    return _hf_processors()


@pytest.mark.parametrize("name", ["altclip", "clip-256-crop-224", "align"])
@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize(("width", "height"), SIZES)
def test_preprocess_equals_transformers(hf_processors, name: str, mode: str, width: int, height: int) -> None:
    spec, processor = hf_processors[name]
    image = random_image(np.random.default_rng(width * 31 + height), width, height, mode)
    theirs = processor(images=[image], return_tensors="np")["pixel_values"][0]  # type: ignore[operator]
    ours = preprocess([image], spec)[0]
    assert ours.shape == (3, spec.size, spec.size) and ours.dtype == np.float32
    # EfficientNet's processor keeps a grey image one channel; ours copies it to three, as convert("RGB")
    assert max_diff(ours, np.broadcast_to(theirs, ours.shape)) <= 1e-6


def test_only_the_crop_is_resampled_for_extreme_aspect_ratios(monkeypatch) -> None:
    """A large enlargement computes only the crop; it must equal Pillow's full resize then crop."""
    import service.preprocessing.image as module

    rng = np.random.default_rng(12)
    cases = [(1, 1), (5000, 20), (3, 4000), (4000, 1), (1, 3000), (2, 3), (3000, 300), (300, 5000)]
    cases += [(int(rng.integers(1, 3000)), int(rng.integers(1, 60))) for _ in range(12)]
    specs = [
        ImageSpec(224, resize="shortest_edge", resize_size=224),
        ImageSpec(50, resize="shortest_edge", resize_size=77, resample="bilinear"),
        ImageSpec(17, resize="shortest_edge", resize_size=17),
    ]
    for i, (w, h) in enumerate(cases):
        size = (w, h) if i % 2 else (h, w)
        image = random_image(rng, *size, "RGB" if i % 3 else "L")
        for spec in specs:
            monkeypatch.setattr(module, "_FULL_RESIZE_CROPS", 0)
            cropped = preprocess([image], spec)
            monkeypatch.setattr(module, "_FULL_RESIZE_CROPS", 10**12)
            full = preprocess([image], spec)
            assert np.array_equal(cropped, full), (size, spec)


def test_spec_sizes_and_decode_target() -> None:
    shortest = ImageSpec(224, resize="shortest_edge", resize_size=256)
    assert shortest.resized_size(640, 480) == (341, 256) and shortest.resized_size(3, 4000) == (256, 341333)
    assert shortest.decode_min_side == 512  # 2 x the resize target, not the crop
    fixed = ImageSpec(289, resize="fixed", resize_size=(346, 400), rescale=Rescale(1 / 127.5, -1.0))
    assert fixed.resized_size(10, 5000) == (400, 346) and fixed.decode_min_side == 800
    assert SPEC.decode_min_side == 448 and SPEC.resized_size(5000, 20) == (224, 224)
    with pytest.raises(ValueError, match=r"shortest_edge.*needs resize_size an int >= size \(224\)"):
        ImageSpec(224, resize="shortest_edge", resize_size=200)
    with pytest.raises(ValueError, match=r"fixed.*\(height, width\)"):
        ImageSpec(224, resize="fixed", resize_size=224)
    with pytest.raises(ValueError, match="either mean/std or rescale"):
        ImageSpec(224, mean=CLIP_MEAN, std=CLIP_STD, rescale=Rescale(1 / 127.5, -1.0))
    with pytest.raises(ValueError, match="resample"):
        ImageSpec(224, resample="lanczos")  # type: ignore[arg-type]


def test_reduced_decoding_keeps_the_resize_target_for_shortest_edge() -> None:
    """The reduced JPEG decode keeps both sides >= 2 x the resize target; the result stays close."""
    spec = ImageSpec(224, resize="shortest_edge", resize_size=256)
    data = encode(photo_like(np.random.default_rng(6), 2400, 1600), "JPEG", quality=90)
    reduced = decode_image(data, reduce_to=spec.decode_min_side)
    assert reduced.size == (1200, 800)  # 1/2: 1/4 would make the short side 400 < 512
    full, fast = preprocess([decode_image(data)], spec)[0], preprocess([reduced], spec)[0]
    levels = np.abs(full - fast) * np.array(spec.std, np.float32)[:, None, None] * 255
    assert levels.max() <= 6 and levels.mean() <= 0.5
