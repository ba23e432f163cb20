"""Shared pieces of the deploy checks: paths, rendering the chart with a real Helm (v4, in-process via
helm-python-sdk) into parsed manifests. A plain module (not conftest) so test modules import it by a
name no other test directory uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "tuwen"
CI_VALUES = sorted((CHART_DIR / "ci").glob("*-values.yaml"))
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas shipped.
KUBE_VERSIONS = ("1.27", "1.33")


def import_helm() -> Any:
    return pytest.importorskip("helm_python", reason="helm-python-sdk (Helm v4) is in the dev extra")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def render_docs(chart: Any, values: dict[str, Any], name: str = "tuwen") -> dict[str, list[dict[str, Any]]]:
    """Render the chart; template path -> its manifests (NOTES.txt left out)."""
    rendered = chart.render(values, name=name, namespace="search", is_install=True)
    return {
        path: [doc for doc in yaml.safe_load_all(text) if doc]
        for path, text in rendered.items()
        if not path.endswith("NOTES.txt")
    }


def find(docs: dict[str, list[dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [doc for manifests in docs.values() for doc in manifests if doc["kind"] == kind]
