"""`tuwen embed --bundle` (ONNX Runtime, no torch) prints what `tuwen embed --checkpoint` prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundles import make_tiny_bundle
from PIL import Image

from training.models import build_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

# Runs the real CLI in a fresh interpreter and fails if anything imported torch along the way.
NO_TORCH_RUNNER = """
import io, sys, contextlib
from service.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = main(sys.argv[1:])
assert rc == 0, rc
leaked = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not leaked, f"torch was imported: {leaked[:5]}"
print(out.getvalue(), end="")
"""


@pytest.fixture(scope="module")
def checkpoint_and_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    bundle = make_tiny_bundle(root / "bundle", seed=7)
    torch.manual_seed(7)
    state = {f"module.{k}": v for k, v in build_model("tiny-vit").state_dict().items()}
    torch.save({"epoch": 0, "step": 0, "name": "tiny", "state_dict": state}, root / "tiny.pt")
    return root / "tiny.pt", bundle


def _embed(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH_RUNNER, "embed", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _embed_checkpoint(*args: str, capsys: pytest.CaptureFixture[str]) -> dict:
    from service.cli import main

    assert main(["embed", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_text_bundle_equals_checkpoint_without_torch(
    checkpoint_and_bundle: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, bundle = checkpoint_and_bundle
    texts = ["一只猫", "北京的秋天，银杏叶落满街道"]
    from_bundle = _embed("--bundle", str(bundle), "--text", *texts)
    from_checkpoint = _embed_checkpoint(
        "--checkpoint", str(checkpoint), "--arch", "tiny-vit", "--text", *texts, capsys=capsys
    )
    assert from_bundle["model"] == from_checkpoint["model"] == "tiny-vit"
    assert from_bundle["dim"] == from_checkpoint["dim"] == 64
    np.testing.assert_allclose(from_bundle["embeddings"], from_checkpoint["embeddings"], atol=1e-5)


def test_image_bundle_equals_checkpoint_without_torch(
    checkpoint_and_bundle: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, bundle = checkpoint_and_bundle
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(80, 60), (32, 48)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(paths[-1])
    from_bundle = _embed("--bundle", str(bundle), "--image", *map(str, paths))
    from_checkpoint = _embed_checkpoint(
        "--checkpoint", str(checkpoint), "--arch", "tiny-vit", "--image", *map(str, paths), capsys=capsys
    )
    assert len(from_bundle["embeddings"]) == 2
    np.testing.assert_allclose(from_bundle["embeddings"], from_checkpoint["embeddings"], atol=1e-5)


def test_tampered_bundle_is_refused_by_the_cli(
    checkpoint_and_bundle: tuple[Path, Path], tmp_path: Path
) -> None:
    import shutil

    _, bundle = checkpoint_and_bundle
    copy = tmp_path / "tampered"
    shutil.copytree(bundle, copy)
    with (copy / "text.onnx").open("r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "embed", "--bundle", str(copy), "--text", "猫"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "text.onnx does not match the sha256" in done.stderr
