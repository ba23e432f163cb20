"""Tiny model bundles for tests: a random tiny model exported to fp32 ONNX (a few seconds).

Other test packages wrap this in their own fixtures, e.g.::

    @pytest.fixture(scope="session")
    def tiny_bundle(tmp_path_factory):
        return make_tiny_bundle(tmp_path_factory.mktemp("bundle"))
"""

from __future__ import annotations

from pathlib import Path


def make_tiny_bundle(
    out_dir: Path, arch: str = "tiny-vit", seed: int = 0, *, fp16: bool = False, int8: bool = False
) -> Path:
    import torch

    from training.export.writer import ExportOptions, export_bundle
    from training.models import build_model

    torch.manual_seed(seed)
    model = build_model(arch)
    export_bundle(
        model,
        Path(out_dir),
        provenance={"source": "random", "arch": arch, "seed": seed},
        options=ExportOptions(fp16=fp16, int8=int8, seed=seed),
        log=lambda _: None,
    )
    return Path(out_dir)
