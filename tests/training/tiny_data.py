"""A tiny Chinese-CLIP-format dataset and a matching training config, for the trainer's tests."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from training.config import TrainConfig

COLOURS = {"红色": (220, 30, 30), "绿色": (30, 200, 30), "蓝色": (30, 30, 220), "黄色": (230, 220, 20)}


def write_tiny_dataset(root: Path, n_images: int = 24, seed: int = 0) -> Path:
    """Noisy 64×64 colour fields, captioned with their colour; train and valid splits."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    root.mkdir(parents=True, exist_ok=True)
    for split, offset in (("train", 0), ("valid", 10_000)):
        with open(root / f"{split}_imgs.tsv", "w") as imgs, open(root / f"{split}_texts.jsonl", "w") as texts:
            for i in range(n_images):
                name = names[i % len(names)]
                pixels = np.clip(np.array(COLOURS[name]) + rng.normal(0, 25, (64, 64, 3)), 0, 255)
                buffer = io.BytesIO()
                Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
                imgs.write(f"{offset + i}\t{base64.b64encode(buffer.getvalue()).decode()}\n")
                record = {"text_id": offset + i, "text": f"一张{name}的图片", "image_ids": [offset + i]}
                texts.write(json.dumps(record, ensure_ascii=False) + "\n")
    return root


def tiny_config(data_root: Path, out_dir: Path, **overrides) -> TrainConfig:
    settings = {
        "name": "test",
        "out_dir": out_dir,
        "arch": "tiny-vit",
        "data": {"root": data_root, "num_workers": 0, "valid_split": None},
        "batch_size": 8,
        "max_steps": 4,
        "warmup_steps": 1,
        "lr": 1e-3,
        "progress": False,
        "log_every": 1,
    }
    return TrainConfig.model_validate({**settings, **overrides})
