"""The demo model, the paper's recipe at toy scale: `python -m training.demo --out artifacts/demo`.

1. the synthetic Chinese image–caption dataset (with English captions of the same scenes);
2. a tiny "English CLIP" trained on the English captions — the stand-in for OpenAI CLIP;
3. stage 1: its image tower, frozen, initialises the Chinese model, whose text tower learns to meet it;
4. stage 2: everything trainable from the stage-1 weights, fresh optimizer and schedule;
5. the ablation: the same Chinese model from scratch for the same number of Chinese steps (1 + 2);
6. held-out (test split) retrieval of both, and zero-shot colour / shape classification with Chinese
   prompt templates; the final checkpoint at OUT/checkpoint.pt, the figures in
   OUT/eval.json.

Each step is a config in training/configs (demo-*.yaml) run by the ordinary trainer; paths are rewritten
under --out. Deterministic for a seed on a given machine. The bundle is not exported here (`tuwen export`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch

from service.preprocessing.text import ChineseTokenizer
from training.checkpoints import load_checkpoint
from training.config import TrainConfig, load_config
from training.data.synthetic import write_synthetic_dataset
from training.evaluate import evaluate_retrieval, open_cnclip_split, zero_shot_accuracy
from training.train import train

CONFIGS = Path(__file__).parent / "configs"
SPLIT_SIZES = {"n_train": 2000, "n_valid": 200, "n_test": 200}


def stage_config(name: str, out: Path, seed: int, **overrides: object) -> TrainConfig:
    """training/configs/NAME.yaml with its paths moved under `out`."""
    path = CONFIGS / f"{name}.yaml"
    settings = {"out_dir": out / load_config(path).out_dir.name, "seed": seed, "progress": False, **overrides}
    return load_config(path, [f"{key}={value}" for key, value in settings.items()])


def export_visual_openai_format(checkpoint: Path, destination: Path) -> Path:
    """The English CLIP's weights as an OpenAI-CLIP-format state dict (`visual.*` keys, no prefix)."""
    model = load_checkpoint(checkpoint).model
    torch.save({f"visual.{k}": v for k, v in model.visual.state_dict().items()}, destination)
    return destination


def held_out_evaluation(checkpoint: Path, data: Path, out_dir: Path) -> dict:
    """Test-split retrieval, plus zero-shot classification of each scene's colour and shape."""
    model = load_checkpoint(checkpoint).model
    tokenizer = ChineseTokenizer.from_vocab(context_length=model.config.context_length)
    test = open_cnclip_split(data, "test")
    summary = evaluate_retrieval(model, tokenizer, test, out_dir=out_dir)
    scenes = [
        json.loads(line) for line in (data / "test_scenes.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    for attribute in ("color", "shape"):
        classes = sorted({scene[attribute] for scene in scenes})
        labels = {scene["image_id"]: classes.index(scene[attribute]) for scene in scenes}
        accuracy = zero_shot_accuracy(model, tokenizer, classes, test.images, labels)
        summary[f"zero_shot_{attribute}"] = {**accuracy, "classes": len(classes)}
    return summary


def run_demo(out: Path, seed: int = 0, split_sizes: dict[str, int] = SPLIT_SIZES) -> dict:
    """Build everything in a staging directory beside `out` and move it into place at the end, so a reader
    (or a second demo run) never sees a half-written demo."""
    out = Path(out)
    staging = out.parent / f".{out.name}.building-{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    report = _build(staging, seed, split_sizes)
    report["checkpoint"] = str(out / "checkpoint.pt")
    (staging / "eval.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    shutil.rmtree(out, ignore_errors=True)  # an older demo (and any bundle exported from it) is now stale
    staging.rename(out)
    return report


def _build(out: Path, seed: int, split_sizes: dict[str, int]) -> dict:
    started = time.perf_counter()
    data = out / "data"
    write_synthetic_dataset(data, seed=seed, **split_sizes)

    english = train(stage_config("demo-english", out, seed, **{"data.root": data / "en"}))
    visual = export_visual_openai_format(english.checkpoint, english.checkpoint.parent / "visual.pt")
    stage1 = train(
        stage_config("demo-stage1", out, seed, **{"data.root": data, "init.openai_visual": visual})
    )
    stage2 = train(
        stage_config("demo-stage2", out, seed, **{"data.root": data, "init.checkpoint": stage1.checkpoint})
    )
    scratch = train(stage_config("demo-scratch", out, seed, **{"data.root": data}))

    runs = {"english": english, "stage1": stage1, "stage2": stage2, "scratch": scratch}
    final = out / "checkpoint.pt"
    shutil.copyfile(stage2.checkpoint, final)
    two_stage = held_out_evaluation(final, data, out / "eval" / "two-stage")
    from_scratch = held_out_evaluation(scratch.checkpoint, data, out / "eval" / "scratch")
    return {
        "checkpoint": str(final),
        "arch": load_checkpoint(final).model.config.name,
        "seed": seed,
        "split": "test",
        "steps": {name: len(run.losses) for name, run in runs.items()},
        "final_loss": {"stage2": stage2.losses[-1], "scratch": scratch.losses[-1]},
        "two_stage": two_stage,
        "scratch": from_scratch,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/demo"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = run_demo(args.out, args.seed)
    t2i, base = report["two_stage"]["text_to_image"], report["scratch"]["text_to_image"]
    print(
        f"held-out text→image R@1: two-stage {t2i['r1']:.1f}, from scratch {base['r1']:.1f} "
        f"(mean recall {t2i['mean_recall']:.1f} vs {base['mean_recall']:.1f}); "
        f"{report['checkpoint']} in {report['seconds']} s"
    )


if __name__ == "__main__":
    main()
