"""deploy/k8s/index-rayjob.yaml, checked statically (no cluster or KubeRay here): the RayJob's pod templates
are valid, locked-down core/v1 pods for each Kubernetes version we target, its entrypoint is a command line
`tuwen` itself accepts, and every TUWEN_* variable it sets is a real setting."""

from __future__ import annotations

import shlex
from typing import Any

import kubernetes_validate
from deploy_support import KUBE_VERSIONS, ROOT, load_yaml

from service.cli import build_parser
from service.config import Settings

JOB = ROOT / "deploy" / "k8s" / "index-rayjob.yaml"


def _templates(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cluster = job["spec"]["rayClusterSpec"]
    templates = {
        "head": cluster["headGroupSpec"]["template"],
        "submitter": job["spec"]["submitterPodTemplate"],
    }
    for group in cluster["workerGroupSpecs"]:
        templates[f"worker {group['groupName']}"] = group["template"]
    return templates


def test_the_rayjob_runs_tuwen_index_on_the_cluster_and_loads() -> None:
    job = load_yaml(JOB)
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "tuwen"
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.address, args.load) == ("index", "auto", True)
    # CPU workers and a big tower: one wide actor per worker, decode tasks on the rest of each worker
    assert (args.actors, args.actor_cpus, args.actor_gpus, args.decode_in) == (4, 6, 0, "tasks")
    # bulk import from the Milvus's object storage where the collections are empty
    assert (args.method, args.import_to) == ("auto", "s3://milvus-bucket/tuwen-import")
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # the driver alone on the head


def test_every_pod_template_is_a_valid_locked_down_pod() -> None:
    job = load_yaml(JOB)
    settings = {f"TUWEN_{name.upper()}" for name in Settings.model_fields}
    for name, template in _templates(job).items():
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "tuwen-index"},
            "spec": template["spec"],
        }
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(pod, version, strict=True)
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        volumes = {v["name"] for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
            assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes, name
            unknown = {
                e["name"] for e in container.get("env", []) if e["name"].startswith("TUWEN_")
            } - settings
            assert not unknown, f"{name}: not settings of service.config.Settings: {unknown}"
