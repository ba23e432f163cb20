"""Fixtures the service tests ask for by name (none is automatic)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """The module's in-process Ray (started by the first `tuwen index`), shut down after its last test."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TUWEN_* setting from the environment the suite runs in: each test sets what it means."""
    for name in [k for k in os.environ if k.startswith("TUWEN_")]:
        monkeypatch.delenv(name)
