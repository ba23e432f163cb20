"""Shared pieces of the service benchmarks: a bundle, a real ``tuwen serve`` process, queries, statistics.

Nothing here runs at import. The benchmarks start the service exactly as a user does (the ``tuwen`` CLI,
uvicorn, loopback only) so that what they measure is what ships.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TUWEN = Path(sys.executable).with_name("tuwen")


def ensure_bundle(out_dir: Path, arch: str, seed: int = 0, *, int8: bool = False) -> Path:
    """A random ``arch`` model exported as a bundle (fp32 ONNX, plus int8 when asked); reused when
    ``out_dir`` already holds one with the precisions wanted."""
    manifest = out_dir / "manifest.json"
    if manifest.is_file() and (not int8 or '"int8"' in manifest.read_text()):
        return out_dir
    started = time.perf_counter()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if int8:
        official_random_bundle(out_dir, arch, out_dir.parent / f"{arch}-official.pt", seed=seed, int8=True)
    else:
        sys.path.insert(0, str(ROOT))
        from tests.bundles import make_tiny_bundle  # works for any arch: random weights, real export

        make_tiny_bundle(out_dir, arch=arch, seed=seed)
    print(f"exported a random {arch} bundle to {out_dir} in {time.perf_counter() - started:.0f} s")
    return out_dir


def official_random_bundle(
    out_dir: Path, arch: str, checkpoint: Path, *, seed: int = 0, int8: bool = False
) -> Any:
    """Random weights built by the official ``cn_clip`` code, saved as an official ``.pt`` checkpoint and
    exported through the user's path (``load_checkpoint`` → ``export_bundle``); returns the official model.

    The official initialisation is used (not Tuwen's factory) so both sides of a comparison compute the
    same function, and because its weight scales are closer to trained ones: int8 on Tuwen's random
    ViT-B-16 init fails the export's accuracy gate (image cosine 0.987), on the official one it passes.
    """
    import torch

    sys.path.insert(0, str(ROOT))
    from tests.peers import official_model  # the cn_clip import shim (test-only dependency)
    from training.checkpoints import load_checkpoint
    from training.export.writer import ExportOptions, export_bundle
    from training.models import load_model_config

    torch.manual_seed(seed)
    official = official_model(load_model_config(arch))  # cn_clip.create_model(struct), fp32, eval
    state = {f"module.{k}": v for k, v in official.state_dict().items()}
    torch.save({"epoch": 0, "step": 0, "name": arch, "state_dict": state}, checkpoint)
    ours = load_checkpoint(checkpoint, arch=arch).model
    options = ExportOptions(int8=int8)
    export_bundle(ours, out_dir, provenance={"bench": "random"}, options=options, log=lambda _m: None)
    return official


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.contextmanager
def serve(
    bundle: Path, data_dir: Path, *, env: dict[str, str] | None = None, ready_timeout_s: float = 300
) -> Iterator[Service]:
    """Run ``tuwen serve`` on a free loopback port until ``/readyz`` is true; stop it afterwards."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "serve.log"
    child_env = os.environ | {"TUWEN_LOG_LEVEL": "warning"} | (env or {})
    args = [str(TUWEN), "serve", "--bundle", str(bundle), "--data-dir", str(data_dir), "--port", str(port)]
    with open(log, "ab") as out:
        process = subprocess.Popen(args, env=child_env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"tuwen serve exited with {process.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"tuwen serve was not ready after {ready_timeout_s:.0f} s; see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=5).json().get("ready"):
                    break
            time.sleep(0.5)
        yield Service(url, process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # uvicorn's graceful stop: the lifespan stops Milvus too
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def chinese_queries(n: int, seed: int = 0, min_chars: int = 4, max_chars: int = 30) -> list[str]:
    """Realistic search queries: synthetic-gallery captions cut or joined to 4–30 characters."""
    from training.data.synthetic import CHINESE_TEMPLATES, sample_scene

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        want = rng.randint(min_chars, max_chars)
        text = ""
        while len(text) < want:
            text += sample_scene(rng).chinese_caption(rng.choice(CHINESE_TEMPLATES)) + "，"
        out.append(text[:want].rstrip("，") or text[:want])
    return out


def jpeg_images(n: int, size: int = 224, seed: int = 0, quality: int = 90) -> list[bytes]:
    """Synthetic scenes as JPEG bytes (the common upload format)."""
    import io

    from training.data.synthetic import render_scene, sample_scene

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        buffer = io.BytesIO()
        render_scene(sample_scene(rng), rng, size).save(buffer, "JPEG", quality=quality)
        out.append(buffer.getvalue())
    return out


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float]:
    if not seconds:
        return {
            "p50_ms": float("nan"),
            "p95_ms": float("nan"),
            "p99_ms": float("nan"),
            "mean_ms": float("nan"),
        }
    a = np.asarray(seconds) * 1000
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "mean_ms": float(a.mean())}


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=False
        ).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    def cell(v: Any) -> str:
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    widths = [max(len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(cell(r.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)))


def save_json(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return path
