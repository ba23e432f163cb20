"""`tuwen build-engines`: build and verify TensorRT engines for this GPU from a bundle's ONNX graphs.

Torch-free (TensorRT, ONNX Runtime, numpy), so the runtime images, which carry no training code, build
their engines on the first start (deploy/docker/entrypoint.sh).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from service.commands.errors import CommandError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here: every `tuwen` invocation registers this command, few of them run it
    from pydantic import ValidationError

    from service.bundle import Bundle, BundleError
    from service.config import Settings
    from service.engines.cache import EngineCacheError, build_root
    from service.engines.tensorrt_build import EngineBuildError, build_engines
    from service.engines.verify import VerificationFailed

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
