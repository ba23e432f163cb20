"""Tower latency and throughput on CPU: Tuwen's bundle (ONNX Runtime fp32, int8) against the official
``cn-clip`` PyTorch eager model, with the same random weights, measured in one process run.

    .venv/bin/python bench/towers_cpu.py --arch ViT-B-16 RN50

The official model is built by ``cn_clip.clip.utils.create_model`` (random weights), saved as an official
``.pt`` checkpoint and exported through the user's path (``load_checkpoint`` → ``export_bundle``), so both
sides compute the same function. The official side runs under ``torch.no_grad()`` with the same thread count
(the official docs timed it without, which would flatter us). Text queries are 4–30 Chinese characters:
the official side pads them to 52 tokens as its ``tokenize()`` does; ours runs them unpadded (one at a time)
or padded to the longest of the batch. Prints a table and writes JSON; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(
    0, str(ROOT)
)  # bench scripts run from a checkout; tests/peers.py holds the cn_clip import shim

from bench.common import official_random_bundle  # noqa: E402
from service.bundle import Bundle  # noqa: E402
from service.engines import load_towers  # noqa: E402
from service.preprocessing.text import ChineseTokenizer  # noqa: E402
from tests.peers import import_cn_clip  # noqa: E402
from training.models import load_model_config  # noqa: E402

COMMON_CHARS = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严"
LENGTHS = list(range(4, 31))


def queries(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list(COMMON_CHARS), size=int(rng.choice(LENGTHS)))) for _ in range(n)]


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up: lazy allocations, ORT arena growth
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_arch(arch: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, object]]:
    config = load_model_config(arch)
    bundle_dir = workdir / f"{arch}-bundle"
    official = official_random_bundle(bundle_dir, arch, workdir / f"{arch}.pt", int8=True)
    bundle = Bundle.load(bundle_dir)
    engines = {
        p: load_towers(bundle, backend="onnxruntime", precision=p, threads=args.threads)
        for p in ("fp32", "int8")
    }
    tokenizer = ChineseTokenizer.from_vocab(context_length=config.context_length)
    cn_clip = import_cn_clip()
    size = config.image_resolution
    rng = np.random.default_rng(0)

    texts1 = queries(args.repeats, seed=1)
    texts32 = queries(32, seed=2)
    pixels = {b: rng.standard_normal((b, 3, size, size)).astype(np.float32) for b in (1, 16)}
    rows: list[dict[str, object]] = []

    def record(tower: str, batch: int, impl: str, seconds: list[float]) -> None:
        med = statistics.median(seconds)
        rows.append(
            {
                "arch": arch,
                "tower": tower,
                "batch": batch,
                "impl": impl,
                "median_ms": med * 1e3,
                "p90_ms": float(np.percentile(seconds, 90)) * 1e3,
                "items_per_s": batch / med,
            }
        )

    # text, batch 1: cycle through queries of different lengths so each call sees a realistic length
    def cycler(items: list[str]) -> Callable[[], str]:
        state = {"i": 0}

        def nxt() -> str:
            state["i"] = (state["i"] + 1) % len(items)
            return items[state["i"]]

        return nxt

    with torch.no_grad():
        nxt = cycler(texts1)
        record(
            "text",
            1,
            "cn-clip pytorch fp32",
            timed(lambda: official.encode_text(cn_clip.tokenize([nxt()])), args.repeats),
        )
        for precision, towers in engines.items():
            nxt = cycler(texts1)

            def one(towers=towers, nxt=nxt) -> object:
                ids, mask = tokenizer.pad(tokenizer.encode([nxt()]))
                return towers.text.embed(ids, mask)

            record("text", 1, f"tuwen onnxruntime {precision}", timed(one, args.repeats))

        record(
            "text",
            32,
            "cn-clip pytorch fp32",
            timed(lambda: official.encode_text(cn_clip.tokenize(texts32)), args.batch_repeats),
        )
        for precision, towers in engines.items():

            def many(towers=towers) -> object:
                ids, mask = tokenizer.pad(tokenizer.encode(texts32))
                return towers.text.embed(ids, mask)

            record("text", 32, f"tuwen onnxruntime {precision}", timed(many, args.batch_repeats))

        for batch, repeats in ((1, args.repeats // 2), (16, args.batch_repeats)):
            x = pixels[batch]
            tx = torch.from_numpy(x)
            record(
                "image",
                batch,
                "cn-clip pytorch fp32",
                timed(lambda tx=tx: official.encode_image(tx), repeats),
            )
            for precision, towers in engines.items():
                record(
                    "image",
                    batch,
                    f"tuwen onnxruntime {precision}",
                    timed(lambda x=x, t=towers: t.image.embed(x), repeats),
                )
    return rows


def with_ratios(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    base = {
        (r["arch"], r["tower"], r["batch"]): r["median_ms"]
        for r in rows
        if str(r["impl"]).startswith("cn-clip")
    }
    for r in rows:
        r["speedup_vs_cn_clip"] = base[(r["arch"], r["tower"], r["batch"])] / r["median_ms"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=["ViT-B-16", "RN50"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=60, help="timed calls at batch 1")
    parser.add_argument("--batch-repeats", type=int, default=8, help="timed calls at batch 16/32")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "towers_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="tuwen-bench-") as tmp:
        for arch in args.arch:
            rows += bench_arch(arch, args, Path(tmp))
    rows = with_ratios(rows)

    print(
        f"{'arch':9} {'tower':6} {'batch':>5} {'implementation':28} {'median ms':>10} {'items/s':>9} {'vs cn-clip':>10}"
    )
    for r in rows:
        print(
            f"{r['arch']:9} {r['tower']:6} {r['batch']:>5} {r['impl']:28} {r['median_ms']:>10.2f} "
            f"{r['items_per_s']:>9.1f} {r['speedup_vs_cn_clip']:>9.2f}x"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.platform(),
        "processor": platform.processor(),
        "threads": args.threads,
        "torch": torch.__version__,
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, ensure_ascii=False))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
