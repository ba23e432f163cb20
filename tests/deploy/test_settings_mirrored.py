"""Every setting of service.config.Settings appears in the compose file's environment, the chart's
values (and its rendered ConfigMap/Secret), the values schema, and docs/deploy.md — under one naming rule:

    field milvus_uri  ->  env TUWEN_MILVUS_URI  ->  Helm config.milvusUri
    secret fields (SecretStr: api_keys, milvus_token) -> Helm auth.apiKeys / auth.milvusToken -> a Secret
"""

from __future__ import annotations

import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from deploy_support import CHART_DIR, ROOT, find, import_helm, load_yaml, render_docs
from pydantic import SecretStr

from service.config import Settings

PREFIX = Settings.model_config.get("env_prefix", "")


def env_name(field: str) -> str:
    return f"{PREFIX}{field}".upper()


def camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(part.capitalize() for part in rest)


def is_secret(field: str) -> bool:
    annotation = Settings.model_fields[field].annotation
    return SecretStr in (annotation, *typing.get_args(annotation))


FIELDS = sorted(Settings.model_fields)
PLAIN = [f for f in FIELDS if not is_secret(f)]
SECRET = [f for f in FIELDS if is_secret(f)]


def test_the_settings_class_is_the_one_the_deploy_files_expect() -> None:
    assert PREFIX == "TUWEN_"
    assert SECRET, "expected SecretStr fields (API keys, Milvus token) to go to a Secret"


def test_every_setting_is_in_the_compose_environment() -> None:
    services = load_yaml(ROOT / "docker-compose.yml")["services"]
    for service in ("tuwen", "tuwen-cpu"):
        environment = services[service]["environment"]
        missing = [env_name(f) for f in FIELDS if env_name(f) not in environment]
        assert missing == [], f"{service}: add to x-tuwen-env in docker-compose.yml: {missing}"
        unknown = [k for k in environment if k.startswith(PREFIX) and k not in {env_name(f) for f in FIELDS}]
        assert unknown == [], f"{service}: not a setting of service.config.Settings: {unknown}"


def test_every_setting_is_a_helm_value_and_nothing_else_is() -> None:
    values = load_yaml(CHART_DIR / "values.yaml")
    assert sorted(values["config"]) == sorted(camel(f) for f in PLAIN)
    for field in SECRET:
        assert camel(field) in values["auth"], f"auth.{camel(field)} is missing from values.yaml"


def test_the_values_schema_mirrors_the_settings_choices() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
    properties = schema["properties"]["config"]["properties"]
    assert sorted(properties) == sorted(camel(f) for f in PLAIN)
    checked = 0
    for field in PLAIN:
        annotation = Settings.model_fields[field].annotation
        members = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
        choices = [a for a in members if typing.get_origin(a) is typing.Literal]
        if choices:
            expected = set(typing.get_args(choices[0])) | ({None} if type(None) in members else set())
            assert set(properties[camel(field)]["enum"]) == expected, field
            checked += 1
    assert checked >= 3  # backend, precision, log level, index type


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def test_the_chart_renders_every_setting_under_its_env_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chart = import_helm().Chart.load(CHART_DIR)
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("key-2:globex\n", encoding="utf-8")
    every: dict[str, Any] = {camel(f): v for f, v in _sample_values().items()}
    every["apiKeysFile"] = str(keys_file)
    docs = render_docs(chart, {"config": every, "auth": {"apiKeys": "k:t", "milvusToken": "root:Milvus"}})
    (config_map,) = find(docs, "ConfigMap")
    assert sorted(config_map["data"]) == sorted(env_name(f) for f in PLAIN)
    (secret,) = find(docs, "Secret")
    assert sorted(secret["data"]) == sorted(env_name(f) for f in SECRET)
    # What the chart writes, the service reads back from its environment as the intended settings.
    for name in [k for k in os.environ if k.startswith(PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in config_map["data"].items():
        monkeypatch.setenv(name, value)
    parsed = Settings()
    assert parsed.milvus_index_params == {"M": 8}
    assert parsed.cors == ["https://a.example", "https://b.example"]
    assert parsed.max_batch_text == 7
    assert parsed.tenant_rate_limits() == {"globex": 5.0}


def _sample_values() -> dict[str, Any]:
    """A valid, non-null value for every plain setting (so nothing is skipped as 'service default')."""
    samples: dict[str, Any] = {}
    for field in PLAIN:
        info = Settings.model_fields[field]
        annotation = info.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        base = (
            args[0]
            if typing.get_origin(annotation) in (typing.Union, __import__("types").UnionType)
            else annotation
        )
        if typing.get_origin(base) is typing.Literal:
            samples[field] = typing.get_args(base)[-1]
        elif field == "max_batch_text":
            samples[field] = 7
        elif typing.get_origin(base) is dict or base is dict:
            samples[field] = {"M": 8}
        elif typing.get_origin(base) is list or base is list:
            samples[field] = ["https://a.example", "https://b.example"]
        elif base is bool:
            samples[field] = True
        elif base is int:
            samples[field] = _within(info, 64)
        elif base is float:
            samples[field] = 2.5
        elif field == "port":
            samples[field] = 8000
        elif field == "milvus_uri":
            samples[field] = "http://milvus:19530"
        elif field == "thumbnail_s3_uri":
            samples[field] = "s3://thumbnails/tuwen"
        elif field == "rate_limits":  # tenant:rps for a tenant of the keys file below
            samples[field] = "globex:5"
        else:  # paths and strings
            samples[field] = f"/srv/{field}"
    return samples


def _within(info: Any, wanted: int) -> int:
    for meta in info.metadata:
        wanted = max(wanted, getattr(meta, "ge", None) or wanted)
        wanted = min(wanted, getattr(meta, "le", None) or wanted)
    return wanted


def test_every_setting_is_documented() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    rows = {
        m.group(1): m.group(0) for m in re.finditer(r"^\| `(TUWEN_[A-Z0-9_]+)` \|.*$", docs, re.MULTILINE)
    }
    missing = [env_name(f) for f in FIELDS if env_name(f) not in rows]
    assert missing == [], f"add rows to the settings table in docs/deploy.md: {missing}"
    for field in FIELDS:
        helm_key = f"auth.{camel(field)}" if is_secret(field) else f"config.{camel(field)}"
        assert f"`{helm_key}`" in rows[env_name(field)], f"{env_name(field)}: the row must name {helm_key}"
    stale = sorted(set(rows) - {env_name(f) for f in FIELDS})
    assert stale == [], f"docs/deploy.md documents settings that no longer exist: {stale}"


def _documented_default(field: str) -> str:
    """How docs/deploy.md writes a setting's default: `unset` for None, `empty` for "" / {} / []."""
    default = Settings.model_fields[field].get_default(call_default_factory=True)
    if default is None:
        return "unset"
    if default in ("", {}, []):
        return "empty"
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def test_every_documented_default_is_the_settings_default() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    rows = {
        m.group(1): m.group(2).strip()
        for m in re.finditer(r"^\| `(TUWEN_[A-Z0-9_]+)` \|[^|]*\|([^|]*)\|", docs, re.MULTILINE)
    }
    wrong = {
        env_name(f): (rows[env_name(f)], _documented_default(f))
        for f in FIELDS
        if rows.get(env_name(f))
        not in (_documented_default(f), _documented_default(f).rstrip("0").rstrip("."))
    }
    assert wrong == {}, (
        f"docs/deploy.md defaults differ from service.config.Settings (documented, actual): {wrong}"
    )
