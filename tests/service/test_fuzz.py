"""Schemathesis against a real `tuwen serve` (its own OpenAPI document, every phase, a fixed seed): no
generated request may get a 5xx, and the server may log no traceback. `bench/fuzz.py` is the long run."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.common import serve
from bench.fuzz import fuzz, serve_env
from tests.service.api_server import tiny_bundle

pytestmark = pytest.mark.slow


def test_the_fuzzer_finds_no_server_error(tmp_path: Path) -> None:
    env = serve_env(tmp_path / "data") | {"TUWEN_LOG_LEVEL": "info"}
    with serve(tiny_bundle(), tmp_path / "data", env=env) as service:
        result = fuzz(service.url, service.log, tmp_path, max_examples=12, seed=7)
    assert result.cases >= 300, result.report["test_cases"]
    assert result.failures == [] and result.errors == [], (result.failures, result.errors)
    assert all(p["status"] == "success" for p in result.report["phases"].values()), result.report["phases"]
    assert result.server_tracebacks == 0, service.log.read_text()[-5000:]
    assert result.exit_code == 0
