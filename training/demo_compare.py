"""The three families' recipes side by side at demo scale: `python -m training.demo_compare --out DIR`.

On the demo's synthetic data and Chinese step budget (300 steps of batch 64 after the English CLIP):

1. Chinese-CLIP two-stage, as `training.demo`: English CLIP (300 steps) -> stage 1, its image tower
   frozen (150) -> stage 2, all trainable (150);
2. AltCLIP two-stage: teacher learning from the same English CLIP's text tower on the parallel text (150,
   no images; the image tower and text projection are the English CLIP's) -> contrastive, image tower frozen
   (150);
3. ALIGN: EfficientNet + BERT from scratch with ALIGN's loss (300);
4. from scratch: the Chinese-CLIP model, InfoNCE, random init (300).

Then text→image and image→text R@1/5/10 of each on the held-out test split, written to OUT/compare.json.
Every run is a config in training/configs (demo-*.yaml) run by the ordinary trainer. The AltCLIP student's
tokenizer is a SentencePiece Unigram model trained here on the training split's parallel text (XLM-R's id
layout, `training.tokenizers.xlmr`); ALIGN's is the shipped Chinese BERT vocab through
`training.tokenizers.wordpiece`. Needs the `sentencepiece` package (the dev extra).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from training.checkpoints import load_checkpoint
from training.data.synthetic import write_synthetic_dataset
from training.demo import SPLIT_SIZES, export_visual_openai_format, stage_config
from training.evaluate import evaluate_retrieval, open_cnclip_split
from training.families import text_tokenizer
from training.train import train

STUDENT_VOCAB = 400  # the synthetic captions hold ~100 distinct characters and words


def train_student_tokenizer(parallel_text: Path, out_dir: Path) -> Path:
    """A SentencePiece Unigram model over both sides of the parallel text (XLM-R's tokenizer type)."""
    import sentencepiece

    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "corpus.txt"
    lines = []
    for line in parallel_text.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        lines += [record["teacher"], record["student"]]
    corpus.write_text("\n".join(dict.fromkeys(lines)) + "\n", encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out_dir / "sentencepiece.bpe"), vocab_size=STUDENT_VOCAB, model_type="unigram",
        character_coverage=1.0, hard_vocab_limit=False, num_threads=1, minloglevel=2,
    )  # fmt: skip
    return out_dir / "sentencepiece.bpe.model"  # the name `tuwen export --tokenizer DIR` looks for


def held_out(checkpoint: Path, tokenizer: Path | None, data: Path, out_dir: Path) -> dict:
    model = load_checkpoint(checkpoint).model
    summary = evaluate_retrieval(
        model, text_tokenizer(model, tokenizer), open_cnclip_split(data, "test"), out_dir=out_dir
    )
    return {
        "arch": model.config.name,
        "text_to_image": summary["text_to_image"],
        "image_to_text": summary["image_to_text"],
        "num_images": summary["num_images"],
        "num_texts": summary["num_texts"],
    }


def run_compare(out: Path, seed: int = 0, split_sizes: dict[str, int] = SPLIT_SIZES) -> dict:
    started = time.perf_counter()
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    data = out / "data"
    write_synthetic_dataset(data, seed=seed, parallel=True, **split_sizes)
    xlmr = train_student_tokenizer(data / "train_parallel.jsonl", out / "tokenizers")
    vocab = Path(__file__).resolve().parents[1] / "service" / "preprocessing" / "vocab.txt"

    def run(name: str, **overrides: object):
        return train(stage_config(name, out, seed, **overrides))

    english = run("demo-english", **{"data.root": data / "en"})
    visual = export_visual_openai_format(english.checkpoint, english.checkpoint.parent / "visual.pt")
    runs = {
        "chinese_clip_stage1": run("demo-stage1", **{"data.root": data, "init.openai_visual": visual}),
    }
    runs["chinese_clip_stage2"] = run(
        "demo-stage2", **{"data.root": data, "init.checkpoint": runs["chinese_clip_stage1"].checkpoint}
    )
    runs["altclip_teacher"] = run(
        "demo-altclip-teacher", **{"data.root": data, "init.teacher": english.checkpoint, "tokenizer": xlmr}
    )
    runs["altclip_contrastive"] = run(
        "demo-altclip-contrastive",
        **{"data.root": data, "init.checkpoint": runs["altclip_teacher"].checkpoint, "tokenizer": xlmr},
    )
    runs["align"] = run("demo-align", **{"data.root": data, "tokenizer": vocab})
    runs["scratch"] = run("demo-scratch", **{"data.root": data})

    evaluated = {
        "chinese_clip_two_stage": (runs["chinese_clip_stage2"].checkpoint, None),
        "altclip_teacher_only": (runs["altclip_teacher"].checkpoint, xlmr),
        "altclip_two_stage": (runs["altclip_contrastive"].checkpoint, xlmr),
        "align": (runs["align"].checkpoint, vocab),
        "scratch": (runs["scratch"].checkpoint, None),
    }
    results = {
        name: held_out(checkpoint, tokenizer, data, out / "eval" / name)
        for name, (checkpoint, tokenizer) in evaluated.items()
    }
    report = {
        "seed": seed,
        "split": "test",
        "steps": {"english_clip": len(english.losses), **{name: len(r.losses) for name, r in runs.items()}},
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def markdown_table(report: dict) -> str:
    rows = ["| | text→image R@1 / R@5 / R@10 | image→text R@1 / R@5 / R@10 |", "|---|---|---|"]
    for name, result in report["results"].items():
        t2i, i2t = result["text_to_image"], result["image_to_text"]
        rows.append(
            f"| {name} | {t2i['r1']:.2f} / {t2i['r5']:.2f} / {t2i['r10']:.2f} "
            f"| {i2t['r1']:.2f} / {i2t['r5']:.2f} / {i2t['r10']:.2f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/demo-compare"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = run_compare(args.out, args.seed)
    print(markdown_table(report))
    print(f"{args.out / 'compare.json'} in {report['seconds']} s")


if __name__ == "__main__":
    main()
