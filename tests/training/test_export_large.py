"""ViT-B-16 and RN50 with random weights export with ONNX fp32 matching PyTorch (cosine >= 0.99999).

Each model is exported once; the export itself compares every graph with PyTorch at the listed batches
and text lengths 1, 5, 52 and a padded mixed-length batch, and records the figures checked here.
About a minute on 2 idle cores.
"""

from __future__ import annotations

import pytest
import torch

from service.bundle import Bundle
from training.export.writer import ExportOptions, export_bundle
from training.models import build_model

pytestmark = pytest.mark.slow

# 16, not 64: a dynamic batch above the export's own is what matters; 64 ViT-B-16 images cost minutes
BATCHES = {"RN50": (1, 7, 16), "ViT-B-16": (1, 7, 16)}


@pytest.mark.parametrize("arch", sorted(BATCHES))
def test_large_model_exports_match_pytorch(arch: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp(arch)
    export_bundle(
        build_model(arch),
        root,
        provenance={"source": "random"},
        options=ExportOptions(batches=BATCHES[arch]),
        log=print,
    )
    bundle = Bundle.load(root)
    for tower in ("image", "text"):
        check = bundle.manifest.towers[tower]["fp32"].verification
        assert check.min_cosine >= 0.99999, (tower, check)
        assert f"batch {BATCHES[arch][-1]}" in " ".join(check.cases)
    text_cases = " ".join(bundle.manifest.towers["text"]["fp32"].verification.cases)
    assert all(f"length {n}" in text_cases for n in (1, 5, 52))
