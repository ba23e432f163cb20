"""Retrieval and zero-shot evaluation: `python -m training.evaluate --checkpoint CKPT --data-root DIR`.

Text→image and image→text Recall@1/5/10 and mean recall (in percent, as the official MUGE scorer), top-10
predictions in the MUGE jsonl format (`{"text_id", "image_ids"}` / `{"image_id", "text_ids"}`), and a
summary JSON. Zero-shot classification averages Chinese prompt templates per class (`--classes`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from service.preprocessing.text import TextTokenizer
from training.data.cnclip import TsvImages, read_texts
from training.data.dataset import load_pixels
from training.data.records import DataError, OnError, report
from training.families import image_spec, text_tokenizer
from training.models import ALIGN, CLIP, AltCLIP

Model = CLIP | AltCLIP | ALIGN

KS = (1, 5, 10)
# Generic Chinese prompt templates for zero-shot classification ("a photo of {}", "a picture of {}", …).
ZERO_SHOT_TEMPLATES = (
    "{}的照片。",
    "一张{}的照片。",
    "{}的图片。",
    "一张{}的图片。",
    "这是{}。",
    "这是一张{}的照片。",
    "图中是{}。",
    "一个{}。",
    "一张模糊的{}的照片。",
    "一张清晰的{}的照片。",
    "一张小的{}的图片。",
    "一张大的{}的图片。",
)


@dataclass(frozen=True)
class RetrievalSet:
    """Images are read lazily; text queries (small next to images) are held."""

    images: Iterable[tuple[int, bytes, str]]  # (image_id, bytes, where); re-iterable
    texts: list[tuple[int, str, list[int]]]  # (text_id, text, image_ids)


def open_cnclip_split(root: Path, split: str) -> RetrievalSet:
    """`{split}_imgs.tsv` + `{split}_texts.jsonl` of a Chinese-CLIP-format dataset."""
    images = TsvImages(Path(root) / f"{split}_imgs.tsv")
    _, records = read_texts(Path(root) / f"{split}_texts.jsonl")

    def iterate() -> Iterator[tuple[int, bytes, str]]:
        for i in range(len(images)):
            try:
                data, where = images.bytes_at(i)
            except DataError as error:
                yield int(images.ids[i]), b"", str(error)  # decoded (and reported) by the caller
                continue
            yield int(images.ids[i]), data, where

    return RetrievalSet(
        images=_Reiterable(iterate), texts=[(r.text_id, r.text, r.image_ids) for r in records]
    )


class _Reiterable:
    """Iterating starts a fresh pass over the file each time (retrieval, then zero-shot)."""

    def __init__(self, factory) -> None:
        self._factory = factory

    def __iter__(self) -> Iterator[tuple[int, bytes, str]]:
        return self._factory()


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def embed_images(
    model: Model,
    images: Iterable[tuple[int, bytes, str]],
    *,
    batch_size: int = 64,
    on_error: OnError = "fail",
) -> tuple[list[int], torch.Tensor]:
    """L2-normalised image features; unreadable images are reported and left out (or raise)."""
    device = next(model.parameters()).device
    spec = image_spec(model)  # the family's pipeline, as in training
    ids: list[int] = []
    features: list[torch.Tensor] = []
    for batch in _batches(images, batch_size):
        pixels, batch_ids = [], []
        for image_id, data, where in batch:
            try:
                if not data:
                    raise DataError(where)
                pixels.append(load_pixels(data, spec, where))
                batch_ids.append(image_id)
            except DataError as error:
                report(str(error), on_error)
        if pixels:
            tensor = torch.from_numpy(np.stack(pixels)).to(device)
            features.append(F.normalize(model.encode_image(tensor).float(), dim=-1).cpu())
            ids.extend(batch_ids)
    return ids, torch.cat(features) if features else torch.empty(0, model.config.embed_dim)


@torch.no_grad()
def embed_texts(
    model: Model, tokenizer: TextTokenizer, texts: Sequence[str], *, batch_size: int = 256
) -> torch.Tensor:
    """L2-normalised text features, tokenised as in training (normalised, padded to the context length)."""
    device = next(model.parameters()).device
    features = []
    for batch in _batches(texts, batch_size):
        ids, _ = tokenizer.pad(tokenizer.encode(batch, normalize=True), tokenizer.context_length)
        features.append(
            F.normalize(model.encode_text(torch.from_numpy(ids).to(device)).float(), dim=-1).cpu()
        )
    return torch.cat(features) if features else torch.empty(0, model.config.embed_dim)


def top_k(
    queries: torch.Tensor, gallery: torch.Tensor, gallery_ids: Sequence[int], k: int = 10
) -> list[list[int]]:
    """Ids of the k most similar gallery items (dot product of normalised features) per query."""
    k = min(k, len(gallery_ids))
    ids = torch.as_tensor(list(gallery_ids))
    rows = []
    for chunk in torch.split(queries, 1024):
        rows.extend(ids[(chunk @ gallery.t()).topk(k, dim=1).indices].tolist())
    return rows


def recall_at_k(
    predictions: Mapping[int, Sequence[int]],
    ground_truth: Mapping[int, Iterable[int]],
    ks: Sequence[int] = KS,
) -> dict[str, float]:
    """R@K in percent over every query of ground_truth (a query is a hit if any true id is in its top K)."""
    if not ground_truth:
        raise ValueError("no queries with ground truth to evaluate")
    hits = dict.fromkeys(ks, 0)
    for query, truth in ground_truth.items():
        ranked = predictions[query]
        truth = set(truth)
        for k in ks:
            hits[k] += any(item in truth for item in ranked[:k])
    scores = {f"r{k}": 100.0 * hits[k] / len(ground_truth) for k in ks}
    scores["mean_recall"] = sum(scores[f"r{k}"] for k in ks) / len(ks)
    return scores


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def evaluate_retrieval(
    model: Model,
    tokenizer: TextTokenizer,
    data: RetrievalSet,
    *,
    out_dir: Path | None = None,
    batch_size: int = 64,
    on_error: OnError = "fail",
) -> dict:
    """Both directions' recall; with out_dir, the MUGE-format predictions and summary.json are written."""
    was_training = model.training
    model.eval()
    try:
        image_ids, image_features = embed_images(model, data.images, batch_size=batch_size, on_error=on_error)
        text_ids = [text_id for text_id, _, _ in data.texts]
        text_features = embed_texts(model, tokenizer, [text for _, text, _ in data.texts])
    finally:
        model.train(was_training)
    known = set(image_ids)
    t2i_truth = {tid: [i for i in ids if i in known] for tid, _, ids in data.texts if ids}
    t2i_truth = {tid: ids for tid, ids in t2i_truth.items() if ids}
    i2t_truth: dict[int, list[int]] = {}
    for tid, ids in t2i_truth.items():
        for image_id in ids:
            i2t_truth.setdefault(image_id, []).append(tid)

    t2i = dict(zip(text_ids, top_k(text_features, image_features, image_ids), strict=True))
    i2t = dict(zip(image_ids, top_k(image_features, text_features, text_ids), strict=True))
    summary = {
        "num_images": len(image_ids),
        "num_texts": len(text_ids),
        "text_to_image": recall_at_k(t2i, t2i_truth),
        "image_to_text": recall_at_k(i2t, i2t_truth),
    }
    if out_dir is not None:
        write_jsonl(out_dir / "text_to_image_predictions.jsonl",
                    ({"text_id": tid, "image_ids": t2i[tid]} for tid in text_ids))  # fmt: skip
        write_jsonl(out_dir / "image_to_text_predictions.jsonl",
                    ({"image_id": iid, "text_ids": i2t[iid]} for iid in image_ids))  # fmt: skip
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


@torch.no_grad()
def zero_shot_classifier(
    model: Model,
    tokenizer: TextTokenizer,
    class_names: Sequence[str],
    templates: Sequence[str] = ZERO_SHOT_TEMPLATES,
) -> torch.Tensor:
    """[num_classes, D]: per class the renormalised mean of its prompts' normalised text features."""
    weights = []
    for name in class_names:
        prompts = embed_texts(model, tokenizer, [template.format(name) for template in templates])
        weights.append(F.normalize(prompts.mean(dim=0), dim=-1))
    return torch.stack(weights)


def zero_shot_accuracy(
    model: Model,
    tokenizer: TextTokenizer,
    class_names: Sequence[str],
    images: Iterable[tuple[int, bytes, str]],
    labels: Mapping[int, int],
    templates: Sequence[str] = ZERO_SHOT_TEMPLATES,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) of `labels[image_id]` (an index into class_names)."""
    was_training = model.training
    model.eval()
    try:
        classifier = zero_shot_classifier(model, tokenizer, class_names, templates)
        image_ids, features = embed_images(model, images)
    finally:
        model.train(was_training)
    ranked = (100.0 * features @ classifier.t()).topk(min(5, len(class_names)), dim=1).indices
    truth = torch.tensor([labels[i] for i in image_ids])
    n = max(1, len(image_ids))
    return {
        "top1": 100.0 * int((ranked[:, 0] == truth).sum()) / n,
        "top5": 100.0 * int((ranked == truth[:, None]).any(dim=1).sum()) / n,
        "num_images": len(image_ids),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="Tuwen / Chinese-CLIP / HF checkpoint")
    parser.add_argument("--arch", default=None, help="model name when the checkpoint does not say")
    parser.add_argument(
        "--tokenizer", type=Path, default=None,
        help="the model's tokenizer.json (AltCLIP, ALIGN; the training config's `tokenizer`)",
    )  # fmt: skip
    parser.add_argument("--data-root", type=Path, required=True, help="Chinese-CLIP-format dataset directory")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--out", type=Path, required=True, help="predictions and summary.json go here")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--on-error", choices=("skip", "fail"), default="fail")
    parser.add_argument(
        "--classes", type=Path, default=None,
        help='zero-shot: a JSON {"classes": [names], "labels": {image_id: class index}} for this split',
    )  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    from training.checkpoints import load_checkpoint

    model = load_checkpoint(args.checkpoint, arch=args.arch).model.to(args.device)
    tokenizer = text_tokenizer(model, args.tokenizer)
    data = open_cnclip_split(args.data_root, args.split)
    summary = evaluate_retrieval(
        model, tokenizer, data, out_dir=args.out, batch_size=args.batch_size, on_error=args.on_error
    )
    if args.classes is not None:
        spec = json.loads(args.classes.read_text(encoding="utf-8"))
        labels = {int(k): int(v) for k, v in spec["labels"].items()}
        summary["zero_shot"] = zero_shot_accuracy(model, tokenizer, spec["classes"], data.images, labels)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
