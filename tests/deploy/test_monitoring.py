"""deploy/: Prometheus scrape config and alert rules, the Grafana dashboard, the Milvus GPU config and
the bulk-ingest Job. Every tuwen_* series they query must be one the service really exposes."""

from __future__ import annotations

import json
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_support import KUBE_VERSIONS, ROOT, load_yaml

from service.metrics import Metrics

DEPLOY = ROOT / "deploy"
SERIES = re.compile(r"\btuwen_[a-z_]+\b")


@pytest.fixture(scope="module")
def exposed_series() -> set[str]:
    """Series names in a real /metrics exposition of the service's registry, every labelled child touched."""
    metrics = Metrics()
    for collector in metrics.registry._collector_to_names:  # every metric, labelled ones included
        labels = getattr(collector, "_labelnames", ())
        child = collector.labels(*["x"] * len(labels)) if labels else collector
        for action in ("inc", "observe", "set"):
            if hasattr(child, action):
                getattr(child, action)(1)
                break
    text = metrics.render().decode()
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def _queried(text: str) -> set[str]:
    return set(SERIES.findall(text))


def test_alert_rules_are_well_formed_and_query_real_series(exposed_series: set[str]) -> None:
    rules = load_yaml(DEPLOY / "prometheus" / "alerts.yml")
    names = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            names.append(rule["alert"])
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
            assert _queried(rule["expr"]) <= exposed_series, rule["alert"]
    assert len(names) == len(set(names))
    assert {"tuwen_ready", "tuwen_queue_rejections_total", "tuwen_milvus_errors_total"} <= _queried(
        (DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8")
    )


def test_dashboard_queries_real_series(exposed_series: set[str]) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "tuwen-dashboard.json").read_text(encoding="utf-8"))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(exprs) >= 10
    queried = set().union(*map(_queried, exprs))
    assert queried <= exposed_series, queried - exposed_series
    # One panel or more per metric family the service exposes.
    families = {
        re.sub(r"_(bucket|sum|count|total)$", "", s) for s in exposed_series if not s.endswith("_created")
    }
    assert families <= {re.sub(r"_(bucket|sum|count|total)$", "", s) for s in queried}
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_prometheus_scrapes_tuwen_and_milvus_and_loads_the_rules() -> None:
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["tuwen"]["static_configs"][0]["targets"] == ["tuwen:8000"]
    assert jobs["milvus"]["static_configs"][0]["targets"] == ["milvus:9091"]
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]


def test_milvus_gpu_config_sizes_the_memory_pool() -> None:
    config: dict[str, Any] = load_yaml(DEPLOY / "milvus" / "user.yaml")
    assert 0 < config["gpu"]["initMemSize"] <= config["gpu"]["maxMemSize"]
    # The chart ships the same pool to the Milvus subchart.
    chart_values = load_yaml(ROOT / "helm" / "tuwen" / "values.yaml")
    assert yaml.safe_load(chart_values["milvus"]["extraConfigFiles"]["user.yaml"])["gpu"] == config["gpu"]


def test_ingest_job_is_a_valid_locked_down_job() -> None:
    job = load_yaml(DEPLOY / "k8s" / "ingest-job.yaml")
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][0] == "ingest"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
