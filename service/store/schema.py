"""Collection names and layout: one collection per (model, kind), so two embedding spaces never mix.

The primary key ``pk`` is ``"<tenant>/<id>"``: ids are the user's strings, and two tenants may use the
same id without one overwriting the other (tenant names cannot contain ``/``). ``id``, ``tenant``,
``metadata`` (JSON), ``created_at`` (epoch ms) and, for texts, ``text`` are stored alongside the vector.
The collection description records model, kind and dim, checked before a collection is reused.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pymilvus import CollectionSchema, DataType, MilvusClient

Kind = Literal["image", "text"]
KINDS: tuple[Kind, ...] = ("image", "text")
SCHEMA_VERSION = 1
ID_MAX_BYTES = 256
TENANT_MAX_CHARS = 64
TEXT_MAX_BYTES = 8192
TENANT_PATTERN = re.compile(rf"[A-Za-z0-9_.\-]{{1,{TENANT_MAX_CHARS}}}")
_NAME_MAX = 255


def collection_name(model: str, kind: Kind) -> str:
    """``ViT-B-16`` + ``image`` → ``tuwen_vit_b_16_image`` (Milvus names: letters, digits, underscores)."""
    slug = re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")
    if not slug:
        raise ValueError(f"model name {model!r} has no letters or digits to name a collection after")
    return f"tuwen_{slug}"[: _NAME_MAX - len(kind) - 1] + f"_{kind}"


def description(model: str, kind: Kind, dim: int) -> str:
    return json.dumps({"tuwen_schema": SCHEMA_VERSION, "model": model, "kind": kind, "dim": dim})


def primary_key(tenant: str, item_id: str) -> str:
    return f"{tenant}/{item_id}"


def build_schema(model: str, kind: Kind, dim: int, *, tenant_partition_key: bool) -> CollectionSchema:
    schema = MilvusClient.create_schema(
        auto_id=False, enable_dynamic_field=False, description=description(model, kind, dim)
    )
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=TENANT_MAX_CHARS + 1 + ID_MAX_BYTES)
    schema.add_field("id", DataType.VARCHAR, max_length=ID_MAX_BYTES)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field(
        "tenant", DataType.VARCHAR, max_length=TENANT_MAX_CHARS, is_partition_key=tenant_partition_key
    )
    schema.add_field("metadata", DataType.JSON)
    schema.add_field("created_at", DataType.INT64)
    if kind == "text":
        schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX_BYTES)
    return schema


def existing_layout(info: dict[str, Any]) -> tuple[dict[str, Any], int | None, set[str]]:
    """(recorded description, vector dim, field names) of a collection from ``describe_collection``."""
    try:
        recorded = json.loads(info.get("description") or "{}")
    except json.JSONDecodeError:
        recorded = {}
    dim = None
    for f in info.get("fields", []):
        if f.get("name") == "vector":
            dim = int(f.get("params", {}).get("dim", 0)) or None
    fields = {f.get("name") for f in info.get("fields", [])}
    return (recorded if isinstance(recorded, dict) else {}), dim, fields
