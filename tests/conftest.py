"""Shared test configuration: GPU tests skip cleanly where no CUDA device exists (CI never has one), and
the files with slow tests run first."""

from __future__ import annotations

import importlib.util

import pytest


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # `make test` hands whole files to xdist workers in this order: the files that hold slow tests (Milvus
    # servers, Ray, exports, training runs) go first, so that the last minutes are short files spread over
    # every worker rather than one worker finishing a long file alone. Stable: order within a file stays.
    slow_files = {item.path for item in items if "slow" in item.keywords}
    items.sort(key=lambda item: item.path not in slow_files)
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is present on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
