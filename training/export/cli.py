"""`tuwen export` and `tuwen build-engines`, registered through the ``tuwen.commands`` entry points.

The root CLI loads these registrars for every `tuwen` invocation (also `tuwen embed --bundle`, which must
not import torch), so this module imports nothing heavy at import time: the work happens in the runners.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from service.cli import CommandError


def register_export(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("export", help="export a checkpoint to a model bundle (ONNX, verified)")
    p.add_argument(
        "checkpoint",
        type=Path,
        help="Tuwen or official Chinese-CLIP .pt file, or a HF ChineseCLIPModel directory",
    )
    p.add_argument("--arch", help="model name, e.g. ViT-B-16 (detected from the weights when omitted)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--fp16", action="store_true", help="also write fp16 graphs for GPUs")
    p.add_argument(
        "--int8", action="store_true", help="also write dynamically quantised int8 graphs for CPUs"
    )
    p.set_defaults(func=run_export)


def register_build_engines(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "build-engines", help="build TensorRT engines for this GPU (kept if already built)"
    )
    p.add_argument("bundle", type=Path, help="bundle directory written by `tuwen export` (not modified)")
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="engine cache directory (default: $TUWEN_ENGINE_CACHE_DIR, else the bundle's trt/ if writable)",
    )
    p.add_argument(
        "--max-batch", type=int, default=256, help="largest batch the engines accept (default 256)"
    )
    p.add_argument("--fp16", action="store_true", help="let TensorRT run layers in fp16")
    p.set_defaults(func=run_build_engines)


def run_export(args: argparse.Namespace) -> int:
    from training.checkpoints import CheckpointError, load_checkpoint
    from training.export.verify import VerificationFailed
    from training.export.writer import ExportOptions, export_bundle

    try:
        loaded = load_checkpoint(args.checkpoint, arch=args.arch)
    except (CheckpointError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from exc
    provenance = {"checkpoint": str(args.checkpoint), **loaded.provenance}
    try:
        manifest = export_bundle(
            loaded.model,
            args.out,
            provenance=provenance,
            options=ExportOptions(fp16=args.fp16, int8=args.int8),
        )
    except VerificationFailed as exc:
        raise CommandError(str(exc), exit_code=1) from exc
    print(f"wrote bundle {args.out} ({manifest.model_name}, dim {manifest.embed_dim})")
    return 0


def run_build_engines(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from service.bundle import Bundle, BundleError
    from service.config import Settings
    from service.engines.cache import EngineCacheError, build_root
    from training.export.tensorrt_build import EngineBuildError, build_engines
    from training.export.verify import VerificationFailed

    try:
        configured = args.cache_dir or Settings().engine_cache_dir
    except ValidationError as exc:
        raise CommandError(f"invalid TUWEN_* settings: {exc}") from exc
    try:
        bundle = Bundle.load(args.bundle)
        cache_dir = build_root(bundle.root, configured)
        result = build_engines(bundle, cache_dir, max_batch=args.max_batch, fp16=args.fp16)
    except (BundleError, EngineBuildError, EngineCacheError, VerificationFailed) as exc:
        raise CommandError(str(exc), exit_code=1) from exc
    if result.built:
        print(f"wrote TensorRT engines to {result.directory}")
    else:
        print(f"TensorRT engines in {result.directory} are up to date for this bundle; nothing to build")
    return 0
