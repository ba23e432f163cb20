"""A procedurally generated, deterministic Chinese image–caption dataset: test data and the demo's data.

Each scene is a light background with ``count`` (一个/两个/三个) ``size`` (大/小) shapes of one colour
grouped at one position (左边/右边/上面/下面/中间). Every scene gets several Chinese captions in
different phrasings and one English caption (the demo first trains a tiny "English CLIP" on those, as
the stand-in for OpenAI CLIP).

Layout of ``out_dir`` (the Chinese-CLIP format, readable by ``training.data.cnclip``):

```
{split}_imgs.tsv        image_id<TAB>base64(PNG)
{split}_texts.jsonl     {"text_id", "text", "image_ids"}: the Chinese captions
{split}_scenes.jsonl    {"image_id", "shape", "color", "count", "size", "position"} (Chinese attribute words)
en/{split}_texts.jsonl  the English captions, one per image
en/{split}_imgs.tsv     a relative symlink to ../{split}_imgs.tsv, so en/ is a dataset directory too
{split}_parallel.jsonl  with ``parallel=True`` (``--parallel``): parallel text for AltCLIP's teacher learning,
                        {"teacher": English caption, "student": a Chinese caption of the same image} per
                        Chinese caption, plus {"teacher": English, "student": the same English} per image
```

In train, a caption lists only its own image. In valid and test, a caption lists every image of that
split with the same attributes: those are indistinguishable, so counting them as misses would
understate recall. Ids are unique across splits. The same arguments give byte-identical files.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import os
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

SPLITS = ("train", "valid", "test")

# Chinese word → English word, in a fixed order (the order is part of determinism).
SHAPES = {
    "圆形": "circle",
    "正方形": "square",
    "三角形": "triangle",
    "星形": "star",
    "菱形": "diamond",
    "六边形": "hexagon",
}
COLORS = {
    "红色": ("red", (220, 40, 40)),
    "绿色": ("green", (40, 160, 60)),
    "蓝色": ("blue", (40, 80, 220)),
    "黄色": ("yellow", (235, 195, 20)),
    "紫色": ("purple", (140, 60, 180)),
    "橙色": ("orange", (245, 130, 30)),
    "黑色": ("black", (30, 30, 30)),
}
COUNTS = {"一个": (1, "one"), "两个": (2, "two"), "三个": (3, "three")}
SIZES = {"大": ("big", 0.11), "小": ("small", 0.065)}  # radius as a fraction of the image side
POSITIONS = {  # group centre (x, y) as fractions of the side, and the English phrase
    "左边": ((0.22, 0.5), "on the left"),
    "右边": ((0.78, 0.5), "on the right"),
    "上面": ((0.5, 0.22), "at the top"),
    "下面": ((0.5, 0.78), "at the bottom"),
    "中间": ((0.5, 0.5), "in the middle"),
}
CHINESE_TEMPLATES = (
    "{count}{color}的{size}{shape}在{position}",
    "{position}有{count}{size}的{color}{shape}",
    "图片的{position}画着{count}{color}{size}{shape}",
    "{count}{size}{color}{shape}，位于画面{position}",
    "这是{count}在{position}的{color}{size}{shape}",
)
_SUPERSAMPLE = 4  # draw at 4× and downsample: smooth edges, still deterministic


@dataclass(frozen=True)
class Scene:
    shape: str
    color: str
    count: str
    size: str
    position: str

    @property
    def attributes(self) -> tuple[str, str, str, str, str]:
        return (self.shape, self.color, self.count, self.size, self.position)

    def chinese_caption(self, template: str) -> str:
        return template.format(
            count=self.count, color=self.color, size=self.size, shape=self.shape, position=self.position
        )

    def english_caption(self) -> str:
        number, word = COUNTS[self.count]
        shape = SHAPES[self.shape] + ("es" if SHAPES[self.shape].endswith("x") else "s") * (number > 1)
        return f"{word} {SIZES[self.size][0]} {COLORS[self.color][0]} {shape} {POSITIONS[self.position][1]}"


def sample_scene(rng: random.Random) -> Scene:
    return Scene(
        shape=rng.choice(list(SHAPES)),
        color=rng.choice(list(COLORS)),
        count=rng.choice(list(COUNTS)),
        size=rng.choice(list(SIZES)),
        position=rng.choice(list(POSITIONS)),
    )


def _outline(shape: str, cx: float, cy: float, r: float, turn: float) -> list[tuple[float, float]]:
    def ring(n: int, radius_of, start: float) -> list[tuple[float, float]]:
        return [
            (
                cx + radius_of(k) * math.cos(start + 2 * math.pi * k / n),
                cy + radius_of(k) * math.sin(start + 2 * math.pi * k / n),
            )
            for k in range(n)
        ]

    if shape == "正方形":
        return ring(4, lambda k: r * 1.2, math.pi / 4 + turn)
    if shape == "三角形":
        return ring(3, lambda k: r * 1.25, -math.pi / 2 + turn)
    if shape == "星形":
        return ring(10, lambda k: r * 1.3 if k % 2 == 0 else r * 0.55, -math.pi / 2 + turn)
    if shape == "菱形":
        return [(cx, cy - r * 1.3), (cx + r * 0.85, cy), (cx, cy + r * 1.3), (cx - r * 0.85, cy)]
    if shape == "六边形":
        return ring(6, lambda k: r * 1.15, turn)
    raise ValueError(f"unknown shape {shape!r}")


def render_scene(scene: Scene, rng: random.Random, image_size: int) -> Image.Image:
    """Draw ``scene``; ``rng`` jitters the background tint, colour, placement and rotation."""
    side = image_size * _SUPERSAMPLE
    background = tuple(rng.randint(225, 255) for _ in range(3))
    image = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(image)
    fill = tuple(max(0, min(255, c + rng.randint(-15, 15))) for c in COLORS[scene.color][1])
    number = COUNTS[scene.count][0]
    radius = SIZES[scene.size][1] * side * rng.uniform(0.9, 1.1)
    (fx, fy), _ = POSITIONS[scene.position]
    # Left/right groups stack vertically, the others line up horizontally, spaced so shapes don't touch.
    vertical = scene.position in ("左边", "右边")
    spacing = 2.7 * radius
    gx, gy = (
        (fx + rng.uniform(-0.04, 0.04)) * side,
        (fy + rng.uniform(-0.04, 0.04)) * side,
    )  # the group moves as one
    for k in range(number):
        offset = (k - (number - 1) / 2) * spacing
        cx = gx + (0 if vertical else offset) + rng.uniform(-0.01, 0.01) * side
        cy = gy + (offset if vertical else 0) + rng.uniform(-0.01, 0.01) * side
        if scene.shape == "圆形":
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
        else:
            draw.polygon(_outline(scene.shape, cx, cy, radius, rng.uniform(-0.25, 0.25)), fill=fill)
    return image.reduce(_SUPERSAMPLE)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


@dataclass(frozen=True)
class SplitSummary:
    split: str
    images: int
    chinese_texts: int
    english_texts: int


def _jsonl(records: Iterator[dict]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def _write_split(
    out_dir: Path,
    split: str,
    n_images: int,
    first_image_id: int,
    first_text_id: int,
    image_size: int,
    seed: int,
    captions_per_image: int,
    parallel: bool = False,
) -> SplitSummary:
    scenes: list[tuple[int, Scene]] = []
    tsv_lines = []
    for index in range(n_images):
        # A generator per image (seeded by a string, which is hashed with SHA-512: stable across runs).
        rng = random.Random(f"tuwen-synthetic:{seed}:{split}:{index}")
        scene = sample_scene(rng)
        image_id = first_image_id + index
        scenes.append((image_id, scene))
        encoded = base64.b64encode(_png(render_scene(scene, rng, image_size))).decode("ascii")
        tsv_lines.append(f"{image_id}\t{encoded}\n")

    same_attributes: dict[tuple, list[int]] = defaultdict(list)
    for image_id, scene in scenes:
        same_attributes[scene.attributes].append(image_id)

    def matches(image_id: int, scene: Scene) -> list[int]:
        return [image_id] if split == "train" else same_attributes[scene.attributes]

    chinese, english, translations = [], [], []
    for image_id, scene in scenes:
        rng = random.Random(f"tuwen-synthetic-captions:{seed}:{split}:{image_id}")
        for template in rng.sample(CHINESE_TEMPLATES, captions_per_image):
            chinese.append({"text": scene.chinese_caption(template), "image_ids": matches(image_id, scene)})
            translations.append({"teacher": scene.english_caption(), "student": chinese[-1]["text"]})
        english.append({"text": scene.english_caption(), "image_ids": matches(image_id, scene)})
        # AltCLIP distils English -> English too, so the student keeps the teacher's own language
        translations.append({"teacher": scene.english_caption(), "student": scene.english_caption()})

    (out_dir / f"{split}_imgs.tsv").write_text("".join(tsv_lines), encoding="utf-8")
    (out_dir / f"{split}_texts.jsonl").write_text(
        _jsonl({"text_id": first_text_id + i, **t} for i, t in enumerate(chinese)), encoding="utf-8"
    )
    (out_dir / "en" / f"{split}_texts.jsonl").write_text(
        _jsonl({"text_id": first_image_id + i, **t} for i, t in enumerate(english)), encoding="utf-8"
    )
    (out_dir / f"{split}_scenes.jsonl").write_text(
        _jsonl(
            {
                "image_id": image_id,
                **dict(zip(("shape", "color", "count", "size", "position"), s.attributes, strict=True)),
            }
            for image_id, s in scenes
        ),
        encoding="utf-8",
    )
    if parallel:
        (out_dir / f"{split}_parallel.jsonl").write_text(_jsonl(iter(translations)), encoding="utf-8")
    link = out_dir / "en" / f"{split}_imgs.tsv"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(Path("..") / f"{split}_imgs.tsv", link)
    return SplitSummary(split, n_images, len(chinese), len(english))


def write_synthetic_dataset(
    out_dir: str | Path,
    n_train: int,
    n_valid: int,
    n_test: int,
    image_size: int = 64,
    seed: int = 0,
    captions_per_image: int = 2,
    parallel: bool = False,
) -> list[SplitSummary]:
    """Write the three splits under ``out_dir`` (created if missing); see the module docstring for the layout.
    ``parallel``: also the parallel English–Chinese text of each split (AltCLIP's teacher learning)."""
    if image_size < 16:
        raise ValueError(f"image_size {image_size} is too small to draw shapes; use at least 16")
    if not 1 <= captions_per_image <= len(CHINESE_TEMPLATES):
        raise ValueError(
            f"captions_per_image must be between 1 and {len(CHINESE_TEMPLATES)}, got {captions_per_image}"
        )
    out_dir = Path(out_dir)
    (out_dir / "en").mkdir(parents=True, exist_ok=True)
    summaries = []
    next_image_id = next_text_id = 0
    for split, n_images in zip(SPLITS, (n_train, n_valid, n_test), strict=True):
        if n_images < 0:
            raise ValueError(f"the {split} split cannot have {n_images} images")
        summary = _write_split(
            out_dir,
            split,
            n_images,
            next_image_id,
            next_text_id,
            image_size,
            seed,
            captions_per_image,
            parallel,
        )
        summaries.append(summary)
        next_image_id += summary.images
        next_text_id += summary.chinese_texts
    return summaries


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.data.synthetic",
        description="Write the synthetic Chinese image–caption dataset in the Chinese-CLIP format.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    parser.add_argument("--train", type=int, default=2000, help="training images (default 2000)")
    parser.add_argument("--valid", type=int, default=200, help="validation images (default 200)")
    parser.add_argument("--test", type=int, default=200, help="test images (default 200)")
    parser.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument(
        "--captions-per-image", type=int, default=2, help="Chinese captions per image (default 2)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives byte-identical files")
    parser.add_argument(
        "--parallel", action="store_true", help="also write {split}_parallel.jsonl (English ↔ Chinese text)"
    )
    args = parser.parse_args(argv)
    summaries = write_synthetic_dataset(
        args.out,
        args.train,
        args.valid,
        args.test,
        args.image_size,
        args.seed,
        args.captions_per_image,
        parallel=args.parallel,
    )
    for s in summaries:
        print(
            f"{s.split}: {s.images} images, {s.chinese_texts} Chinese and {s.english_texts} English captions"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
