"""Fixtures of the deploy checks (helpers live in deploy_support.py)."""

from __future__ import annotations

from typing import Any

import pytest
from deploy_support import CHART_DIR, import_helm


@pytest.fixture(scope="session")
def chart() -> Any:
    return import_helm().Chart.load(CHART_DIR)
