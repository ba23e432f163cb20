"""Offline indexing vs HTTP ingest: images/s for the same folder through ``tuwen index`` (Ray Data → Parquet,
then ``tuwen load`` into a fresh local Milvus server) and through ``tuwen ingest`` into a running service.

    .venv/bin/python bench/index_throughput.py                          # 5,000 JPEGs of 256 px
    .venv/bin/python bench/index_throughput.py --images 1000 --actors 1 2 --num-cpus 2 --modes warm
    .venv/bin/python bench/index_throughput.py --modes warm --decode-in actors tasks --no-ingest
    .venv/bin/python bench/index_throughput.py --arch ViT-B-16 --precision int8 --embed-only
    .venv/bin/python bench/index_throughput.py --arch ViT-B-16 --precision int8 --modes --no-ingest \
        --tower-batches 1 4 8 16 32 --images 96

Both sides use the same random ``--arch`` bundle, the same images (bench/ingest_throughput.py's synthetic
scenes) and a Milvus 2.3.5 server in a fresh data directory, and each runs as the real CLI in a
subprocess. Ingest is timed against a running service (its start-up is not counted). Index runs in two
``--modes``:

- ``cold``: `tuwen index` starts its own local Ray and `tuwen load` its own embedded Milvus server, both
  counted (Ray's ~4–8 s, the server's ~10 s start and ~5 s stop);
- ``warm``: as ingest finds a running service, index finds a running Ray (``ray start --head``, then
  ``--address``) and load a running Milvus server (``TUWEN_MILVUS_URI``): start-ups not counted, the
  actors' start and model load still are. A running cluster has indexed before: one job of 32 images
  runs first, not counted (``--no-warm-up`` times the fresh cluster's first job, which also starts
  Ray Data's cluster-wide helper actors and creates the collections).

Index items/s counts embedded images over the index step alone and over index + load (which ends with
every row indexed; ingest ends at the last acknowledged upsert). ``--embed-only`` adds the tower's own
images/s on resized batches (normalised per call), the ceiling of either path on a CPU-bound model. Prints
a table and saves JSON under ``bench/results/``. Asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WARM_UP_IMAGES = 32
sys.path.insert(0, str(ROOT))  # bench scripts run from a checkout

from bench.common import TUWEN, ensure_bundle, machine, print_table, save_json, serve  # noqa: E402
from bench.ingest_throughput import ingest_once, write_images  # noqa: E402


def timed(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(
        args, capture_output=True, text=True, check=False, cwd=ROOT, env={**os.environ, **env}
    )
    return time.perf_counter() - started, proc


@contextlib.contextmanager
def warm_cluster(num_cpus: int) -> Iterator[tuple[str, str]]:
    """A running local Ray head (``ray start``) and Milvus server; yields (Ray address, Milvus URI)."""
    from service.store.local_server import LocalMilvusServer

    ray = str(Path(sys.executable).with_name("ray"))
    with tempfile.TemporaryDirectory(prefix="tuwen-bench-warm-") as work:
        subprocess.run(
            [
                ray,
                "start",
                "--head",
                f"--num-cpus={num_cpus}",
                "--include-dashboard=false",
                "--disable-usage-stats",
            ],
            check=True,
            capture_output=True,
        )
        server = LocalMilvusServer(Path(work) / "milvus")
        try:
            yield "auto", server.start().uri
        finally:
            server.stop()
            subprocess.run([ray, "stop", "--force"], check=False, capture_output=True)


def index_once(
    bundle: Path,
    folder: Path,
    actors: int,
    decode_in: str,
    num_cpus: int | None,
    batch: int,
    precision: str,
    warm: tuple[str, str] | None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tuwen-bench-index-") as work:
        out = Path(work) / "out"
        env = {
            "TUWEN_BUNDLE": str(bundle),
            "TUWEN_DATA_DIR": str(Path(work) / "data"),
            "TUWEN_PRECISION": precision,
        }
        args = [str(TUWEN), "index", str(folder), "--out", str(out), "--decode-in", decode_in]
        args += ["--actors", str(actors)] if actors else []
        args += ["--batch-size", str(batch), "--no-progress"]
        if warm:
            address, env["TUWEN_MILVUS_URI"] = warm
            # a cluster's default is to reserve a CPU per actor: share the cores as a local Ray does
            args += ["--address", address, "--actor-cpus", "0"]
        elif num_cpus:
            args += ["--num-cpus", str(num_cpus)]
        index_s, proc = timed(args, env)
        load_s, load = timed([str(TUWEN), "load", str(out), "--no-progress"], env)
        summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    embedded = summary.get("embedded", 0)
    seconds = summary.get("seconds", {})
    # Shares of the work: decode and embed are summed over Ray tasks/actors, write is the driver's, load
    # is the whole `tuwen load` (server start, import or upserts, index build, thumbnails).
    work_s = {k: seconds.get(k, 0.0) for k in ("decode", "embed", "write")} | {"load": load_s}
    total = sum(work_s.values()) or 1.0
    return {
        "load_method": summary.get("load_method", ""),
        "shares": {k: round(v / total, 3) for k, v in work_s.items()},
        "stage_s": {k: round(v, 1) for k, v in work_s.items()},
        "actors": actors,
        "index_s": index_s,
        "load_s": load_s,
        "embedded": embedded,
        "loaded": summary.get("loaded", 0),
        "failed": summary.get("failed", 0),
        "index_items_per_s": embedded / index_s,
        "index_load_items_per_s": embedded / (index_s + load_s),
        "exit_codes": [proc.returncode, load.returncode],
        "cli_output": (proc.stdout + load.stdout).strip().splitlines()[-2:]
        + load.stderr.strip().splitlines()[-2:],
    }


def embed_only(bundle: Path, precision: str, images: int, batch: int | None) -> dict[str, Any]:
    """The image tower alone on resized pixels (normalised here, as in both paths), every core, in batches
    of ``batch`` (None: the service's TUWEN_MAX_BATCH_IMAGE, which both paths use): what neither path can
    beat on this CPU."""
    import numpy as np

    from service.config import Settings
    from service.indexing.model import Encoder, model_info

    settings = Settings(bundle=bundle, precision=precision, intra_op_threads=os.cpu_count())
    if batch:
        settings = settings.model_copy(update={"max_batch_image": batch})
    size, batch = model_info(settings).image_size, settings.max_batch_image
    encoder = Encoder(settings)
    pixels = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    encoder.images(pixels)  # warm-up
    calls = max(1, images // batch)
    started = time.perf_counter()
    for _ in range(calls):
        encoder.images(pixels)
    seconds = time.perf_counter() - started
    return {
        "path": f"image tower alone, batches of {batch}",
        "embedded": calls * batch,
        "seconds": seconds,
        "items_per_s": calls * batch / seconds,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="tiny-vit", help="model architecture of the random bundle (%(default)s)")
    p.add_argument("--images", type=int, default=5000, help="images in the folder (%(default)s)")
    p.add_argument("--image-size", type=int, default=256, help="side of each JPEG (%(default)s)")
    p.add_argument("--actors", type=int, nargs="+", default=[0], help="tuwen index --actors (0: its default)")
    p.add_argument(
        "--decode-in",
        nargs="+",
        choices=["tasks", "actors"],
        default=["tasks"],
        help="tuwen index --decode-in (%(default)s)",
    )
    p.add_argument("--num-cpus", type=int, help="tuwen index --num-cpus (default: all)")
    p.add_argument("--batch-size", type=int, default=64, help="tuwen index --batch-size (%(default)s)")
    p.add_argument("--concurrency", type=int, default=16, help="tuwen ingest --concurrency (%(default)s)")
    p.add_argument(
        "--precision", choices=["fp32", "int8"], default="fp32", help="TUWEN_PRECISION, both paths"
    )
    p.add_argument(
        "--workdir", type=Path, help="bundle and images, reused between runs (default: a temp dir)"
    )
    p.add_argument(
        "--modes",
        nargs="*",
        choices=["cold", "warm"],
        default=["cold", "warm"],
        help="see above (none: no index)",
    )
    p.add_argument(
        "--embed-only", action="store_true", help="also time the image tower alone, in the service's batches"
    )
    p.add_argument("--tower-batches", type=int, nargs="*", default=[], help="... and in batches of these")
    p.add_argument("--no-ingest", action="store_true", help="skip tuwen ingest")
    p.add_argument(
        "--no-warm-up",
        dest="warm_up",
        action="store_false",
        help=f"warm: time the fresh cluster's first job (default: run one of {WARM_UP_IMAGES} images first)",
    )
    p.add_argument("--out", type=Path, help="JSON path (default: bench/results/index-<time>.json)")
    args = p.parse_args(argv)

    workdir: Path = args.workdir or Path(tempfile.gettempdir()) / f"tuwen-bench-ingest-{args.arch}"
    int8 = args.precision == "int8"
    bundle = ensure_bundle(workdir / ("bundle-int8" if int8 else "bundle"), args.arch, int8=int8)
    folder = write_images(workdir / f"images-{args.images}-{args.image_size}", args.images, args.image_size)
    rows: list[dict[str, Any]] = []
    warm_ups: list[dict[str, Any]] = []
    for mode in args.modes:
        with (
            warm_cluster(args.num_cpus or os.cpu_count() or 1)
            if mode == "warm"
            else contextlib.nullcontext() as warm
        ):
            if warm and args.warm_up:
                # A running cluster has run Ray Data before: its first job also starts Ray Data's four
                # detached helper actors (stats, autoscaling, usage, actor locations: ~2.5 s here, once
                # per cluster), and a running Milvus holds the collections, as ingest's service has
                # created them before its timing starts.
                small = write_images(
                    workdir / f"images-{WARM_UP_IMAGES}-{args.image_size}", WARM_UP_IMAGES, args.image_size
                )
                first = index_once(
                    bundle, small, 0, "tasks", args.num_cpus, args.batch_size, args.precision, warm
                )
                warm_ups.append({k: first[k] for k in ("index_s", "load_s", "embedded", "exit_codes")})
                print(
                    f"  warm-up (not counted): the fresh cluster's first job indexed {WARM_UP_IMAGES} images "
                    f"in {first['index_s']:.1f} s and loaded them in {first['load_s']:.1f} s"
                )
            for actors, decode_in in [(a, d) for d in args.decode_in for a in args.actors]:
                row = {
                    "path": f"index {mode} --actors {actors or 'default'} --decode-in {decode_in}",
                    **index_once(
                        bundle,
                        folder,
                        actors,
                        decode_in,
                        args.num_cpus,
                        args.batch_size,
                        args.precision,
                        warm,
                    ),
                }
                row["items_per_s"] = row["index_load_items_per_s"]
                rows.append(row)
                print(
                    f"  {row['path']}: {row['index_items_per_s']:.1f} images/s indexing, "
                    f"{row['items_per_s']:.1f} with the load ({row['load_method']}); shares {row['shares']}"
                )
    for batch in ([None] if args.embed_only else []) + args.tower_batches:
        rows.append(embed_only(bundle, args.precision, min(args.images, 1024), batch))
        print(f"  {rows[-1]['path']}: {rows[-1]['items_per_s']:.1f} images/s")
    if not args.no_ingest:
        with (
            tempfile.TemporaryDirectory(prefix="tuwen-ingest-data-") as data,
            serve(bundle, Path(data), env={"TUWEN_PRECISION": args.precision}) as service,
        ):
            ingest = ingest_once(service.url, folder, args.concurrency, workdir)
        rows.append(
            {"path": f"ingest --concurrency {args.concurrency}", "embedded": ingest["acknowledged"], **ingest}
        )
        print(f"  ingest: {ingest['items_per_s']:.1f} images/s")
        for row in rows:  # the measure: index (with its load) over ingest, same images and bundle
            if "index_items_per_s" in row:
                row["index_vs_ingest"] = round(row["index_items_per_s"] / ingest["items_per_s"], 2)
                row["index_load_vs_ingest"] = round(row["index_load_items_per_s"] / ingest["items_per_s"], 2)
    result = {
        "bench": "index_throughput",
        "arch": args.arch,
        "precision": args.precision,
        "images": args.images,
        "image_size": args.image_size,
        "machine": machine(),
        "runs": rows,
        "warm_up": warm_ups,
    }
    print(
        f"\n{args.arch}, {args.images} JPEGs of {args.image_size} px, load average {result['machine']['load_average']}"
    )
    print_table(
        rows,
        [
            "path",
            "items_per_s",
            "index_items_per_s",
            "index_vs_ingest",
            "index_load_vs_ingest",
            "embedded",
            "failed",
            "seconds",
            "index_s",
            "load_s",
        ],
    )
    save_json(f"index-{args.arch}", result, args.out)


if __name__ == "__main__":
    main()
