"""Ingest throughput: items/s for a folder of images through ``tuwen ingest`` (the real CLI, over HTTP).

    .venv/bin/python bench/ingest_throughput.py                       # 500 JPEGs 256 px, concurrency 8
    .venv/bin/python bench/ingest_throughput.py --images 2000 --concurrency 4 8 16

Generates ``--images`` synthetic scenes (``training.data.synthetic``) as JPEG files, starts ``tuwen serve``
(a random ``--arch`` bundle, the default local Milvus on a fresh data directory) and, for each
``--concurrency``, runs ``tuwen ingest FOLDER`` as a subprocess into a fresh tenant-free run (its own
resumable log, so nothing is skipped) and times it end to end. Items/s counts acknowledged images (each
one decoded, embedded by the image tower, thumbnailed and upserted into Milvus); failures come from the
CLI's own report. Prints a table and saves JSON under ``bench/results/``. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench scripts run from a checkout

from bench.common import TUWEN, ensure_bundle, jpeg_images, machine, print_table, save_json, serve  # noqa: E402


def write_images(folder: Path, n: int, size: int) -> Path:
    """``n`` JPEG scenes under ``folder`` (kept between runs when already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.jpg"))) != n:
        for old in folder.glob("*.jpg"):
            old.unlink()
        for i, data in enumerate(jpeg_images(n, size=size, seed=5)):
            (folder / f"scene-{i:06d}.jpg").write_bytes(data)
    return folder


def ingest_once(url: str, folder: Path, concurrency: int, work: Path) -> dict[str, Any]:
    log, report = work / f"ingest-c{concurrency}.log", work / f"ingest-c{concurrency}.failures.jsonl"
    log.unlink(missing_ok=True)
    args = [str(TUWEN), "ingest", str(folder), "--url", url, "--concurrency", str(concurrency)]
    args += ["--log", str(log), "--report", str(report), "--no-progress"]
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT)
    seconds = time.perf_counter() - started
    failures = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    failed = sum(len(f.get("ids", [])) for f in failures)
    done = sum(1 for line in log.read_text().splitlines() if line.strip()) if log.exists() else 0
    return {
        "concurrency": concurrency,
        "seconds": seconds,
        "acknowledged": done,
        "failed": failed,
        "items_per_s": done / seconds,
        "exit_code": proc.returncode,
        "cli_output": proc.stdout.strip().splitlines()[-1:] + proc.stderr.strip().splitlines()[-3:],
        "failure_codes": sorted({str(f.get("code")) for f in failures}),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="tiny-vit", help="model architecture of the random bundle (%(default)s)")
    p.add_argument("--images", type=int, default=500, help="images in the folder (%(default)s)")
    p.add_argument("--image-size", type=int, default=256, help="side of each JPEG (%(default)s)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[8], help="tuwen ingest --concurrency")
    p.add_argument(
        "--workdir", type=Path, help="bundle and images, reused between runs (default: a temp dir)"
    )
    p.add_argument("--set", action="append", default=[], metavar="TUWEN_X=V", help="service setting")
    p.add_argument("--out", type=Path, help="JSON path (default: bench/results/ingest-<time>.json)")
    args = p.parse_args(argv)

    workdir: Path = args.workdir or Path(tempfile.gettempdir()) / f"tuwen-bench-ingest-{args.arch}"
    bundle = ensure_bundle(workdir / "bundle", args.arch)
    folder = write_images(workdir / f"images-{args.images}-{args.image_size}", args.images, args.image_size)
    env = dict(kv.split("=", 1) for kv in args.set)
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="tuwen-ingest-data-") as data,
        serve(bundle, Path(data), env=env) as service,
    ):
        for c in args.concurrency:
            row = ingest_once(service.url, folder, c, workdir)
            rows.append(row)
            print(f"  concurrency {c}: {row['items_per_s']:.1f} items/s, {row['failed']} failed")
    result = {
        "bench": "ingest_throughput",
        "arch": args.arch,
        "images": args.images,
        "image_size": args.image_size,
        "settings": env,
        "machine": machine(),
        "runs": rows,
    }
    print(
        f"\n{args.arch}, {args.images} JPEGs of {args.image_size} px, load average {result['machine']['load_average']}"
    )
    print_table(rows, ["concurrency", "items_per_s", "acknowledged", "failed", "seconds", "exit_code"])
    save_json(f"ingest-{args.arch}", result, args.out)


if __name__ == "__main__":
    main()
