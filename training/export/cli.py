"""`tuwen export`, registered through the ``tuwen.commands`` entry point (it needs torch, so it is
training's; `tuwen build-engines` is torch-free and lives in service/commands).

The root CLI loads this registrar for every `tuwen` invocation (also `tuwen serve`, which must not import
torch), so this module imports nothing heavy at import time: the work happens in the runner.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from service.commands.errors import CommandError


def register_export(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("export", help="export a checkpoint to a model bundle (ONNX, verified)")
    p.add_argument(
        "checkpoint",
        type=Path,
        help="Tuwen or official Chinese-CLIP .pt file, or a HF ChineseCLIPModel, AltCLIPModel or AlignModel"
        " directory",
    )
    p.add_argument(
        "--tokenizer",
        type=Path,
        help="AltCLIP / ALIGN: the directory (or file) with the model's tokenizer: sentencepiece.bpe.model"
        " (or tokenizer.json) / vocab.txt (default: the checkpoint's directory)",
    )
    p.add_argument("--arch", help="model name, e.g. ViT-B-16 (detected from the weights when omitted)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--fp16", action="store_true", help="also write fp16 graphs for GPUs")
    p.add_argument(
        "--int8", action="store_true", help="also write dynamically quantised int8 graphs for CPUs"
    )
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from service.engines.verify import VerificationFailed
    from training.checkpoints import CheckpointError, load_checkpoint
    from training.export.writer import ExportOptions, export_bundle

    try:
        loaded = load_checkpoint(args.checkpoint, arch=args.arch)
    except (CheckpointError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from exc
    provenance = {"checkpoint": str(args.checkpoint), **loaded.provenance}
    # a Hugging Face directory holds its tokenizer files; beside a .pt file is the best guess
    checkpoint = Path(args.checkpoint)
    tokenizer = args.tokenizer or (checkpoint if checkpoint.is_dir() else checkpoint.parent)
    try:
        manifest = export_bundle(
            loaded.model,
            args.out,
            provenance=provenance,
            options=ExportOptions(fp16=args.fp16, int8=args.int8),
            tokenizer_source=tokenizer,
        )
    except VerificationFailed as exc:
        raise CommandError(str(exc), exit_code=1) from exc
    except ValueError as exc:  # e.g. a family's tokenizer file missing: the message names --tokenizer
        raise CommandError(str(exc)) from exc
    print(f"wrote bundle {args.out} ({manifest.family} {manifest.model_name}, dim {manifest.embed_dim})")
    return 0
