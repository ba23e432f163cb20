"""`tuwen index` (a corpus → Parquet shards of embeddings, on Ray Data) and `tuwen load` (shards → Milvus).

For a few thousand items `tuwen ingest` into a running service is simpler; `tuwen index` is for corpora:
it scales out on a Ray cluster, needs no running service, survives being killed (finished shards are
skipped), and its shards can be loaded into several Milvus deployments. See docs/indexing.md.

Needs the `index` extra (`pip install 'tuwen[index]'`: Ray Data, pyarrow); Ray is imported only here, when
the command runs. Settings are the service's (`TUWEN_*`): the same bundle, precision, image limits and
thumbnail size give the same vectors and thumbnails as POST /items.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from service.commands.errors import CommandError

DEFAULT_SHARD_SIZE = 1000


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from typing import get_args

    from service.indexing.pipeline import DecodeIn
    from service.indexing.sources import FORMATS

    p = subparsers.add_parser(
        "index", help="embed a whole corpus into Parquet shards with Ray Data (offline)"
    )
    p.add_argument("source", type=Path, help="image folder, Chinese-CLIP folder, .tar shards, or a manifest")
    p.add_argument("--out", type=Path, required=True, help="output directory (resumable: rerun to continue)")
    p.add_argument("--bundle", type=Path, help="model bundle (default: $TUWEN_BUNDLE)")
    p.add_argument("--format", choices=FORMATS, default="auto", help="source kind (default: by its shape)")
    p.add_argument(
        "--split", help="Chinese-CLIP split (reads SPLIT_imgs.tsv or lmdb/SPLIT, SPLIT_texts.jsonl)"
    )
    p.add_argument("--captions", type=Path, help="JSONL of texts for a folder source: {id, text, metadata}")
    p.add_argument("--address", help="Ray cluster to use (default: a local Ray on this machine)")
    p.add_argument("--num-cpus", type=int, help="CPUs a local Ray may use (default: all)")
    p.add_argument(
        "--actors",
        type=int,
        help="embedding actors, each with its own towers (default: one per GPU with --actor-gpus, one per "
        "CPU with --decode-in actors as long as they fit in half of Ray's memory, else one)",
    )
    p.add_argument(
        "--actor-cpus",
        type=float,
        help="CPUs each embedding actor reserves, and its ONNX Runtime threads (default: 1 on a cluster, 0 "
        "on a local Ray; 0 reserves none and shares the cores; on a local Ray, actors beside decode tasks "
        "always leave them one CPU)",
    )
    p.add_argument(
        "--actor-gpus", type=float, default=0, help="GPUs each embedding actor reserves (default 0)"
    )
    p.add_argument(
        "--decode-in",
        choices=get_args(DecodeIn),
        default="tasks",
        help="where images are decoded: in CPU tasks feeding the actors (default: decoding scales with the "
        "CPUs), or by each actor for the batches it embeds (faster for a tower cheaper than decoding)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="items per embedding actor call (default %(default)s); the towers take them in batches of "
        "TUWEN_MAX_BATCH_IMAGE / TUWEN_MAX_BATCH_TEXT, as in the service",
    )
    p.add_argument(
        "--shard-size",
        type=int,
        default=DEFAULT_SHARD_SIZE,
        help="items per Parquet shard (default %(default)s)",
    )
    _add_load_options(p)
    p.add_argument("--load", action="store_true", help="load the shards into Milvus when indexing is done")
    p.set_defaults(func=run_index)

    q = subparsers.add_parser("load", help="load `tuwen index` shards into Milvus and the thumbnail store")
    q.add_argument("out", type=Path, help="a `tuwen index` output directory")
    _add_load_options(q)
    q.set_defaults(func=run_load)


def _add_load_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tenant", default="default", help="tenant that owns the loaded items (default %(default)s)"
    )
    p.add_argument(
        "--load-batch", type=int, default=1000, help="rows per Milvus upsert (default %(default)s)"
    )
    p.add_argument(
        "--method",
        choices=("auto", "import", "upsert"),
        default="auto",
        help="Milvus import tasks (empty collections only) or batched upserts; auto (default): import 50,000 "
        "items or more into empty collections on the embedded server or with --import-to, else upserts. "
        "See docs/indexing.md",
    )
    p.add_argument(
        "--import-to",
        default="",
        metavar="DEST",
        help="where import files go: s3://bucket/prefix of Milvus's own bucket, or a directory Milvus reads at "
        "the same path (default: OUT/_import, for the embedded server)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check_tenant(tenant: str) -> None:
    from service.store import InvalidItem
    from service.store.validation import check_tenant

    try:
        check_tenant(tenant)
    except InvalidItem as exc:
        raise CommandError(f"--tenant: {exc}") from None


def _settings(bundle: Path | None) -> Any:
    from pydantic import ValidationError

    from service.config import Settings

    try:
        return Settings(bundle=bundle) if bundle else Settings()
    except ValidationError as exc:
        raise CommandError(f"invalid TUWEN_* settings: {exc}") from None


def run_index(args: argparse.Namespace) -> int:
    from service.bundle import BundleError
    from service.indexing import pipeline
    from service.indexing.model import model_info
    from service.indexing.shards import OutputDir
    from service.indexing.sources import plan

    if args.shard_size < 1 or args.batch_size < 1 or (args.actors is not None and args.actors < 1):
        raise CommandError("--shard-size, --batch-size and --actors must be at least 1")
    if (args.actor_cpus is not None and args.actor_cpus < 0) or args.actor_gpus < 0:
        raise CommandError("--actor-cpus and --actor-gpus must be at least 0")
    _check_tenant(args.tenant)
    settings = _settings(args.bundle)
    try:
        info = model_info(settings)
    except BundleError as exc:
        raise CommandError(f"cannot use the bundle: {exc}") from None
    try:
        import ray  # noqa: F401
    except ImportError:
        raise CommandError("`tuwen index` needs Ray Data: pip install 'tuwen[index]'") from None

    rows = plan(args.source, args.format, args.split, args.captions, settings)
    out = OutputDir(args.out)
    header = {
        "source": str(args.source.resolve()),
        "model": info.name,
        "dim": info.dim,
        # what else decides a stored vector or thumbnail: changing it needs a new --out
        "thumbnail_size": settings.thumbnail_size,
        "precision": settings.precision,
    }
    done = out.start(rows, args.shard_size, header)
    pending = [s for s in range(out.plan()["shards"]) if s not in done]
    already = sum(r.items for r in done.values())
    bar, advance = pipeline.progress(len(rows), already, not args.no_progress)
    options = pipeline.RayOptions(
        address=args.address,
        num_cpus=args.num_cpus,
        actors=args.actors,
        actor_cpus=args.actor_cpus,
        actor_gpus=args.actor_gpus,
        decode_in=args.decode_in,
        batch_size=args.batch_size,
    )
    seconds = pipeline.StageSeconds()
    started = time.perf_counter()
    with bar:
        pipeline.run(
            rows,
            args.shard_size,
            pending,
            settings,
            out,
            info,
            options,
            advance,
            seconds,
        )
    seconds.extra["index_wall"] = time.perf_counter() - started
    failures = out.write_report()
    counts = out.counts()
    summary = out.update_summary(
        **counts,
        skipped_shards=len(done),
        indexed_shards=len(pending),
        seconds={k: round(v, 4) for k, v in seconds.as_dict().items()},
    )
    if args.load:
        summary = _load(args, settings, out)
    _print(summary, out, failures)
    return 1 if failures else 0


def run_load(args: argparse.Namespace) -> int:
    from service.indexing.shards import OutputDir

    _check_tenant(args.tenant)
    out = OutputDir(args.out)
    summary = _load(args, _settings(None), out)
    _print(summary, out, out.write_report())
    return 0


def _load(args: argparse.Namespace, settings: Any, out: Any) -> dict[str, Any]:
    from service.indexing import load, pipeline
    from service.store import StoreError

    total = out.counts()["embedded"]
    started = time.perf_counter()
    try:
        bar, advance = pipeline.progress(total, 0, not args.no_progress)
        with bar:
            method, loaded = load.load_shards(
                out, settings, args.tenant, args.method, args.import_to, args.load_batch, advance
            )
    except StoreError as exc:
        raise CommandError(
            f"loading into Milvus at {settings.resolved_milvus_uri} failed: {exc}; the shards are intact: "
            f"run `tuwen load {out.root}` again to resume"
        ) from None
    seconds = {**out.summary().get("seconds", {}), "load": round(time.perf_counter() - started, 4)}
    summary: dict[str, Any] = out.update_summary(
        loaded=loaded,
        load_method=method,
        tenant=args.tenant,
        milvus=settings.resolved_milvus_uri,
        seconds=seconds,
    )
    return summary


def _print(summary: dict[str, Any], out: Any, failures: list[dict[str, str]]) -> None:
    names = ("read", "embedded", "failed", "loaded")
    method = f" by {summary['load_method']}" if "load_method" in summary else ""
    print(
        ", ".join(f"{k} {summary[k]}" for k in names if k in summary)
        + method
        + f" (summary: {out.root / 'summary.json'})"
    )
    if failures:
        print(f"{len(failures)} items failed: see {out.root / 'report.jsonl'}")
