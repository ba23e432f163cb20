"""AltCLIP and ALIGN towers on CPU: Tuwen's bundle (ONNX Runtime fp32, int8) against Hugging Face
``transformers`` eager PyTorch (``AltCLIPModel`` / ``AlignModel``), with the same random weights.

    .venv/bin/python bench/towers_families.py --family align altclip

Each family is built at its released size with random weights (Tuwen's factory, ``torch.manual_seed(0)``),
saved as a Hugging Face directory with a tokenizer (``tests/family_bundles.py``: a SentencePiece model
trained on the synthetic captions for AltCLIP, a WordPiece vocab.txt for ALIGN; both fit the full-size
embeddings) and exported through the user's path, ``tuwen export HF_DIR --out BUNDLE --int8``. The
transformers side loads the same directory with ``from_pretrained``. Both sides get the same token ids
(the bundle's own tokenizer, padded to the longest of the batch) and the same pixels, run with the same
thread count (``torch.set_num_threads`` = ONNX Runtime intra-op threads), transformers under
``torch.inference_mode()``; Tuwen's towers come from ``service.engines.load_towers`` as the service's do.
Text queries: 4–30 Chinese characters (``bench.common.chinese_queries``). Median of the timed calls after
one warm-up; ratio = transformers ms / Tuwen ms. Prints a table and writes JSON; asserts nothing.
The HF directories and bundles are kept under ``--workdir`` and reused by later runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench scripts run from a checkout; tests/family_bundles.py writes tokenizers

from bench.common import TUWEN, chinese_queries, machine, print_table, save_json  # noqa: E402

FAMILIES = {"align": ("ALIGN-base", "AlignModel"), "altclip": ("AltCLIP", "AltCLIPModel")}


def prepare(family: str, workdir: Path, seed: int = 0) -> tuple[Path, Path]:
    """The released-size random model as a HF directory and its bundle (fp32 + int8); reused if present."""
    from tests.family_bundles import save_hf_directory
    from training.models import build_model

    name = FAMILIES[family][0]
    hf_dir, bundle_dir = workdir / f"{name}-hf", workdir / f"{name}-bundle"
    if not (hf_dir / "config.json").is_file():
        torch.manual_seed(seed)
        model = build_model(name).eval()
        print(f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
        save_hf_directory(model, family, hf_dir)
        del model
    manifest = bundle_dir / "manifest.json"
    if not (manifest.is_file() and '"int8"' in manifest.read_text()):
        started = time.perf_counter()
        cmd = [str(TUWEN), "export", str(hf_dir), "--out", str(bundle_dir), "--int8"]
        subprocess.run(cmd, check=True, cwd=ROOT)
        print(f"{name}: exported in {time.perf_counter() - started:.0f} s")
    return hf_dir, bundle_dir


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up: lazy allocations, ORT arena growth
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _features(output: Any) -> torch.Tensor:
    """transformers 4 returns the features; 5 may wrap them in a ModelOutput."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output if getattr(output, "pooler_output", None) is not None else output[0]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return float((a * b).sum(-1).min())


def bench_family(family: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import transformers

    from service.bundle import Bundle
    from service.engines import load_towers

    name, hf_class = FAMILIES[family]
    hf_dir, bundle_dir = prepare(family, args.workdir)
    bundle = Bundle.load(bundle_dir)
    tokenizer = bundle.tokenizer()
    hf = getattr(transformers, hf_class).from_pretrained(hf_dir).eval()
    n_params = sum(p.numel() for p in hf.parameters())
    engines = {
        p: load_towers(bundle, backend="onnxruntime", precision=p, threads=args.threads)
        for p in args.precisions
    }
    size = hf.config.vision_config.image_size
    rng = np.random.default_rng(0)
    texts1 = chinese_queries(args.repeats, seed=1)
    texts32 = chinese_queries(32, seed=2)
    encoded1 = [tokenizer.pad(tokenizer.encode([t])) for t in texts1]
    encoded32 = tokenizer.pad(tokenizer.encode(texts32))
    info: dict[str, Any] = {
        "model": name,
        "parameters_m": n_params / 1e6,
        "image_size": size,
        "tokens_batch1_mean": float(np.mean([ids.shape[1] for ids, _ in encoded1])),
        "tokens_batch32_padded": int(encoded32[0].shape[1]),
        "chars_mean": float(np.mean([len(t) for t in texts1])),
    }
    rows: list[dict[str, Any]] = []

    def record(tower: str, batch: int, impl: str, seconds: list[float]) -> None:
        med = statistics.median(seconds)
        rows.append(
            {
                "family": family,
                "tower": tower,
                "batch": batch,
                "impl": impl,
                "median_ms": med * 1e3,
                "p90_ms": float(np.percentile(seconds, 90)) * 1e3,
                "calls": len(seconds),
            }
        )

    def cycler(items: list[Any]) -> Callable[[], Any]:
        state = {"i": 0}

        def nxt() -> Any:
            state["i"] = (state["i"] + 1) % len(items)
            return items[state["i"]]

        return nxt

    def hf_text(ids: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        return _features(
            hf.get_text_features(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        )

    def hf_image(pixels: np.ndarray) -> torch.Tensor:
        return _features(hf.get_image_features(pixel_values=torch.from_numpy(pixels)))

    with torch.inference_mode():
        # same function on both sides: transformers vs the fp32 (and int8) graphs on one batch
        ids, mask = encoded32
        pixels2 = rng.standard_normal((2, 3, size, size)).astype(np.float32)
        ref_text, ref_image = hf_text(ids, mask).numpy(), hf_image(pixels2).numpy()
        for p, towers in engines.items():
            info[f"min_cosine_text_{p}"] = _cosine(ref_text, towers.text.embed(ids, mask))
            info[f"min_cosine_image_{p}"] = _cosine(ref_image, towers.image.embed(pixels2))
        print(f"{name}: {info}")

        if "text" in args.towers:
            nxt = cycler(encoded1)
            record("text", 1, "transformers", timed(lambda: hf_text(*nxt()), args.repeats))
            for p, towers in engines.items():
                nxt = cycler(encoded1)
                record(
                    "text", 1, f"tuwen {p}", timed(lambda t=towers, n=nxt: t.text.embed(*n()), args.repeats)
                )
            record("text", 32, "transformers", timed(lambda: hf_text(*encoded32), args.batch_repeats))
            for p, towers in engines.items():
                record(
                    "text",
                    32,
                    f"tuwen {p}",
                    timed(lambda t=towers: t.text.embed(*encoded32), args.batch_repeats),
                )
        if "image" in args.towers:
            for batch in args.image_batches:
                repeats = args.image_repeats if batch == 1 else args.batch_repeats
                x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
                record("image", batch, "transformers", timed(lambda x=x: hf_image(x), repeats))
                for p, towers in engines.items():
                    record(
                        "image", batch, f"tuwen {p}", timed(lambda x=x, t=towers: t.image.embed(x), repeats)
                    )
    return rows, info


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    base = {
        (r["family"], r["tower"], r["batch"]): r["median_ms"] for r in rows if r["impl"] == "transformers"
    }
    for r in rows:
        r["ratio_vs_transformers"] = base[(r["family"], r["tower"], r["batch"])] / r["median_ms"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", nargs="+", default=["align", "altclip"], choices=sorted(FAMILIES))
    parser.add_argument("--towers", nargs="+", default=["text", "image"], choices=["text", "image"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    parser.add_argument("--image-batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30, help="timed text calls at batch 1")
    parser.add_argument("--image-repeats", type=int, default=8, help="timed image calls at batch 1")
    parser.add_argument("--batch-repeats", type=int, default=3, help="timed calls at batch 32")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tuwen-families"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)

    import onnxruntime
    import transformers

    rows: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    for family in args.family:
        family_rows, models[family] = bench_family(family, args)
        rows += family_rows
    rows = with_ratios(rows)
    print_table(rows, ["family", "tower", "batch", "impl", "median_ms", "p90_ms", "ratio_vs_transformers"])
    meta = {
        **machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "argv": sys.argv[1:],
    }
    save_json("towers_families", {"meta": meta, "models": models, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
