"""The Helm chart, rendered by a real Helm (v4 via helm-python-sdk, offline) for every ci/*-values.yaml:
lint, values schema, Kubernetes schemas (kubernetes-validate), refusals, and no value that no template reads.

The official milvus subchart cannot be fetched here (no network), so `charts/` is absent: Helm renders the
chart's own templates and skips the dependency; the Milvus manifests themselves are not rendered."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from deploy_support import CHART_DIR, CI_VALUES, KUBE_VERSIONS, find, import_helm, load_yaml, render_docs

helm = import_helm()

# Kinds served by CRDs: no schema in kubernetes-validate; checked by shape below.
CRD_KINDS = {"ServiceMonitor"}
# Everything under `milvus` except `enabled` is the subchart's own values.
SUBCHART_VALUES = ("milvus",)
MISSING_DEPENDENCY = "chart directory is missing these dependencies: milvus"


def _ci_values(path: Path) -> dict[str, Any]:
    return load_yaml(path) or {}


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
def test_ci_values_pass_the_schema_and_render_valid_manifests(chart: Any, values_file: Path) -> None:
    values = _ci_values(values_file)
    chart.validate_schema(values)
    docs = render_docs(chart, values)
    kinds = {doc["kind"] for manifests in docs.values() for doc in manifests}
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy", "PodDisruptionBudget", "Pod"} <= kinds
    for path, manifests in docs.items():
        for doc in manifests:
            if doc["kind"] in CRD_KINDS:
                continue
            for version in KUBE_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    pytest.fail(
                        f"{values_file.name}: {path} ({doc['kind']}) invalid for Kubernetes {version}: {exc}"
                    )


def test_lint_is_clean_apart_from_the_unfetched_milvus_dependency() -> None:
    for values_file in CI_VALUES:
        report = helm.lint(CHART_DIR, _ci_values(values_file), strict=True, kube_version="v1.30.0")
        problems = [
            m["error"] for m in report["messages"] if m["severity"] >= 2 and m["error"] != MISSING_DEPENDENCY
        ]
        assert problems == [], f"{values_file.name}: {problems}"


def test_gpu_values_request_gpus_cache_engines_and_scale(chart: Any) -> None:
    docs = render_docs(chart, _ci_values(CHART_DIR / "ci" / "gpu-values.yaml"))
    (deployment,) = find(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"] == "tuwen:0.1.0-gpu"
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert [c["name"] for c in pod["initContainers"]] == ["fetch-bundle"]
    engines = next(v for v in pod["volumes"] if v["name"] == "engines")
    assert engines["persistentVolumeClaim"]["claimName"] == "tuwen-engines"
    assert {p["metadata"]["name"] for p in find(docs, "PersistentVolumeClaim")} == {"tuwen-engines"}
    (hpa,) = find(docs, "HorizontalPodAutoscaler")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "Pods"]
    assert "replicas" not in deployment["spec"]
    (config,) = find(docs, "ConfigMap")
    assert config["data"]["TUWEN_MILVUS_URI"] == "http://tuwen-milvus:19530"
    assert config["data"]["TUWEN_MILVUS_INDEX_TYPE"] == "GPU_CAGRA"
    assert config["data"]["TUWEN_CORS"] == "https://search.example.com"
    (monitor,) = find(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    assert monitor["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_cpu_values_request_no_gpu_and_run_milvus_lite_on_a_volume(chart: Any) -> None:
    docs = render_docs(chart, _ci_values(CHART_DIR / "ci" / "cpu-values.yaml"))
    (deployment,) = find(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert container["image"] == "tuwen:0.1.0-cpu"
    (config,) = find(docs, "ConfigMap")
    assert config["data"]["TUWEN_MILVUS_URI"] == ""  # a local Milvus in TUWEN_DATA_DIR
    assert {p["metadata"]["name"] for p in find(docs, "PersistentVolumeClaim")} == {"tuwen-data"}


def test_pods_are_locked_down_and_probed(chart: Any) -> None:
    for values_file in CI_VALUES:
        docs = render_docs(chart, _ci_values(values_file))
        (deployment,) = find(docs, "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
        (container,) = pod["containers"]
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        (test_pod,) = find(docs, "Pod")
        assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert test_pod["spec"]["containers"][0]["command"][-1].endswith("/readyz")


def test_secret_comes_from_values_or_from_an_existing_secret(chart: Any) -> None:
    own = render_docs(chart, _ci_values(CHART_DIR / "ci" / "gpu-values.yaml"))
    (secret,) = find(own, "Secret")
    assert set(secret["data"]) == {"TUWEN_API_KEYS"}
    external = render_docs(chart, _ci_values(CHART_DIR / "ci" / "external-milvus-values.yaml"))
    assert find(external, "Secret") == []
    (deployment,) = find(external, "Deployment")
    env_from = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert {"secretRef": {"name": "tuwen-credentials"}} in env_from


def test_a_changed_setting_changes_the_pod_checksum(chart: Any) -> None:
    values = _ci_values(CHART_DIR / "ci" / "gpu-values.yaml")
    changed = copy.deepcopy(values)
    changed["config"]["logLevel"] = "debug"

    def checksum(v: dict[str, Any]) -> str:
        (deployment,) = find(render_docs(chart, v), "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum(values) != checksum(changed)


BAD_VALUES = [
    ({"image": {"flavor": "tpu"}}, "/image/flavor"),
    ({"config": {"backend": "torch"}}, "/config/backend"),
    ({"config": {"precision": "bf16"}}, "/config/precision"),
    ({"config": {"milvusIndexType": "DISKANN"}}, "/config/milvusIndexType"),
    ({"config": {"port": 70000}}, "/config/port"),
    ({"config": {"maxBatchText": 0}}, "/config/maxBatchText"),
    ({"config": {"maxBatchTxt": 8}}, "/config"),  # a typo is refused, not ignored
    ({"replicaCount": "two"}, "/replicaCount"),
    ({"bundle": {"source": "s3"}}, "/bundle/source"),
    ({"bundle": {"source": "pvc", "pvc": {"claimName": ""}}}, "/bundle/pvc/claimName"),
    ({"service": {"type": "ExternalName"}}, "/service/type"),
    ({"auth": {"apiKeys": "no-tenant-here"}}, "/auth/apiKeys"),
    ({"ingress": {"hosts": [{"host": "x", "paths": [{"path": "/", "pathType": "Glob"}]}]}}, "pathType"),
    ({"engineCache": {"persistence": {"enabled": True, "size": "lots"}}}, "/engineCache/persistence/size"),
    ({"milvus": {"enabled": "yes"}}, "/milvus/enabled"),
]


@pytest.mark.parametrize(("override", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_bad_values_are_refused_by_the_schema(chart: Any, override: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=where):
        chart.validate_schema(override)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"milvus": {"enabled": False}, "replicaCount": 2, "auth": {"allowAnonymous": True}},
            "A local Milvus",
        ),
        ({"auth": {"apiKeys": "", "existingSecret": "", "allowAnonymous": False}}, "No API keys"),
        (
            {"image": {"flavor": "cpu"}, "auth": {"allowAnonymous": True}},
            "gpu.enabled and image.flavor disagree",
        ),
        (
            {"bundle": {"source": "initContainer"}, "auth": {"allowAnonymous": True}},
            "bundle.initContainer.image",
        ),
    ],
    ids=["lite-with-replicas", "no-api-keys", "flavor-mismatch", "init-without-image"],
)
def test_templates_refuse_broken_combinations(chart: Any, override: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        chart.render(override, name="tuwen", namespace="search")


# ---------------------------------------------------------------- every value in values.yaml is read


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list) and node and all(isinstance(x, dict) for x in node):
        for index, value in enumerate(node):
            yield from _leaves(value, (*path, index))
    else:
        yield path


def _mutated(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x" if value else "x"
    if isinstance(value, dict):
        return {**value, "mutated": "x"}
    if isinstance(value, list):
        return [*value, "mutated"]
    return "mutated"  # None


def _get(node: Any, path: tuple[Any, ...]) -> tuple[bool, Any]:
    for key in path:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, node


def _set(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _outcome(chart: Any, values: dict[str, Any]) -> str:
    try:
        return repr(sorted(chart.render(values, name="tuwen", namespace="search").items()))
    except helm.HelmError as exc:
        return f"error: {exc}"


def unused_values(chart_dir: Path, tmp_path: Path, base_values: list[dict[str, Any]]) -> list[str]:
    """Paths of values.yaml whose change alters no render (output or refusal) for any of the bases.

    Each leaf is changed on its own in a schema-less copy of the chart (so a change the schema would
    refuse still reaches the templates) and the chart is rendered again."""
    copy_dir = tmp_path / chart_dir.name
    shutil.copytree(chart_dir, copy_dir, ignore=shutil.ignore_patterns("values.schema.json"))
    loose = helm.Chart.load(copy_dir)
    defaults = load_yaml(chart_dir / "values.yaml")
    merged = [loose.merge_values(values) for values in base_values]
    baselines = [_outcome(loose, values) for values in merged]
    unused = []
    for path in _leaves(defaults):
        if path[0] in SUBCHART_VALUES and path != ("milvus", "enabled"):
            continue
        for values, baseline in zip(merged, baselines, strict=True):
            present, current = _get(values, path)
            _, parent = _get(values, path[:-1])
            if not present and not isinstance(parent, dict):
                continue  # e.g. a list item a ci file replaced
            # Helm drops null defaults while merging; such a leaf is set from nothing.
            changed = copy.deepcopy(values)
            _set(changed, path, _mutated(current))
            if _outcome(loose, changed) != baseline:
                break
        else:
            unused.append(".".join(map(str, path)))
    return unused


def test_every_value_is_read_by_a_template(tmp_path: Path) -> None:
    bases = [_ci_values(path) for path in CI_VALUES]
    assert unused_values(CHART_DIR, tmp_path, bases) == []


def test_the_unused_value_check_catches_an_unused_value(tmp_path: Path) -> None:
    chart_dir = tmp_path / "src" / "tuwen"
    shutil.copytree(CHART_DIR, chart_dir)
    with (chart_dir / "values.yaml").open("a", encoding="utf-8") as values:
        values.write("\nleftover:\n  knob: 3\n")
    bases = [_ci_values(CHART_DIR / "ci" / "gpu-values.yaml")]
    assert "leftover.knob" in unused_values(chart_dir, tmp_path / "work", bases)
