"""Fuzz the HTTP API with schemathesis against a real ``tuwen serve`` and count server errors.

Every phase runs (examples, coverage, fuzzing, stateful) from the OpenAPI document the server itself
serves, so the multipart forms it documents (``/embed`` images, ``/search`` with an image, ``POST /items``)
are fuzzed too. The check is ``not_a_server_error``: bad input must get a 4xx, never a 5xx. The server's
log is scanned for tracebacks afterwards (a fault answered with a 4xx would still be a bug).

    .venv/bin/python bench/fuzz.py                      # >= 10,000 cases, a few minutes
    .venv/bin/python bench/fuzz.py --max-examples 40    # quicker

The suite runs the same thing with a fixed seed and a few hundred cases (tests/service/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, ensure_bundle, machine, save_json, serve

SCHEMATHESIS = Path(sys.executable).with_name("st")
PHASES = "examples,coverage,fuzzing,stateful"
API_KEYS = "fuzz-key-a:alice,fuzz-key-b:bob"


@dataclass(frozen=True)
class FuzzResult:
    cases: int
    failures: list[Any]
    errors: list[Any]
    exit_code: int
    seconds: float
    server_tracebacks: int
    report: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.failures and not self.errors and not self.server_tracebacks


def fuzz(
    url: str, server_log: Path, work: Path, *, max_examples: int, seed: int, key: str = "fuzz-key-a"
) -> FuzzResult:
    """One schemathesis run against ``url``; the JSON report and the server log decide the result."""
    report_dir = work / "schemathesis"
    args = [
        str(SCHEMATHESIS),
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--checks",
        "not_a_server_error",
        "--phases",
        PHASES,
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--generation-database",
        "none",
        "--request-timeout",
        "60",
        "--workers",
        "1",
        "--no-color",
        "--report",
        "json",
        "--report-dir",
        str(report_dir),
    ]
    started = time.perf_counter()
    run = subprocess.run(args, capture_output=True, text=True, cwd=work, timeout=3600)
    seconds = time.perf_counter() - started
    reports = sorted(report_dir.glob("*.json"))
    if not reports:
        raise RuntimeError(f"schemathesis wrote no report (exit {run.returncode}):\n{run.stdout[-3000:]}")
    report = json.loads(reports[-1].read_text())
    log_text = server_log.read_text(errors="replace") if server_log.exists() else ""
    return FuzzResult(
        cases=int(report["test_cases"]["generated"]),
        failures=report["failures"],
        errors=report["errors"],
        exit_code=run.returncode,
        seconds=seconds,
        server_tracebacks=log_text.count("Traceback"),
        report=report,
    )


def serve_env(data_dir: Path) -> dict[str, str]:
    """The service as a hostile client meets it: API keys on, Milvus Lite (fast to open) under ``data_dir``."""
    return {"TUWEN_API_KEYS": API_KEYS, "TUWEN_MILVUS_URI": str(data_dir / "milvus.db")}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-examples", type=int, default=800, help="cases per operation and phase")
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--bundle", type=Path, default=ROOT / "bench" / "bundles" / "tiny-vit")
    args = parser.parse_args()
    bundle = ensure_bundle(args.bundle, "tiny-vit")
    with tempfile.TemporaryDirectory(prefix="tuwen-fuzz-") as tmp:
        work = Path(tmp)
        env = serve_env(work / "data") | {"TUWEN_LOG_LEVEL": "info"}
        with serve(bundle, work / "data", env=env) as service:
            result = fuzz(service.url, service.log, work, max_examples=args.max_examples, seed=args.seed)
    print(
        f"schemathesis {result.report['schemathesis_version']}: {result.cases} cases in {result.seconds:.0f} s, "
        f"{len(result.failures)} failures, {len(result.errors)} errors, "
        f"{result.server_tracebacks} tracebacks in the server log (seed {args.seed})"
    )
    for failure in result.failures[:20]:
        print(json.dumps(failure, ensure_ascii=False)[:2000])
    save_json(
        "fuzz",
        {
            "machine": machine(),
            "seed": args.seed,
            "max_examples": args.max_examples,
            "cases": result.cases,
            "failures": result.failures,
            "errors": result.errors,
            "server_tracebacks": result.server_tracebacks,
            "seconds": result.seconds,
            "phases": result.report["phases"],
            "warnings": result.report["warnings"],
        },
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
