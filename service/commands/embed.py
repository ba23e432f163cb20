"""`tuwen embed`: print L2-normalised embeddings as JSON, from a model bundle or a PyTorch checkpoint.

The bundle path runs ONNX Runtime and never imports torch. The checkpoint path is provided by the
training package through the ``tuwen.embedders`` entry point named ``checkpoint``, so that the service
package stays importable without torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from service.commands.errors import CommandError
from service.commands.plugins import installed_entry_points
from service.engines.embed_bundle import EmbedResult


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("embed", help="print L2-normalised embeddings of texts or images as JSON")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", type=Path, help="model bundle directory (ONNX Runtime, no torch)")
    source.add_argument("--checkpoint", type=Path, help="checkpoint file or HF directory (PyTorch)")
    p.add_argument("--arch", help="model name, e.g. ViT-B-16 (required with --checkpoint)")
    inputs = p.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--text", nargs="+", metavar="T", help="one or more texts")
    inputs.add_argument("--image", nargs="+", type=Path, metavar="PATH", help="one or more image files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # ImageError, BundleError and the checkpoint loader's CheckpointError carry messages written for users
    from service.bundle import BundleError

    try:
        result = _embed(args)
    except (BundleError, ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from exc
    output = {
        "model": result.model,
        "family": result.family,
        "dim": result.dim,
        "embeddings": result.embeddings,
    }
    json.dump(output, sys.stdout)
    sys.stdout.write("\n")
    return 0


def _embed(args: argparse.Namespace) -> EmbedResult:
    if args.bundle is not None:
        from service.engines.embed_bundle import embed_with_bundle

        result = embed_with_bundle(args.bundle, texts=args.text, images=args.image)
    else:
        if not args.arch:
            raise CommandError("--arch is required with --checkpoint (e.g. --arch ViT-B-16)")
        embedder = _checkpoint_embedder()
        result = embedder(args.checkpoint, arch=args.arch, texts=args.text, images=args.image)
    return result


def _checkpoint_embedder() -> Callable[..., EmbedResult]:
    found = [ep for ep in installed_entry_points("tuwen.embedders") if ep.name == "checkpoint"]
    if not found:
        raise CommandError(
            "--checkpoint needs the training package, which this install lacks (the runtime images carry"
            " only the service): use --bundle, or a source checkout with pip install '.[training]'"
        )
    embedder: Callable[..., EmbedResult] = found[0].load()
    return embedder
