"""Collection names and layout: one collection per (model, kind), so two embedding spaces never mix.

The primary key ``pk`` is ``"<tenant>/<id>"``: ids are the user's strings, and two tenants may use the
same id without one overwriting the other (tenant names cannot contain ``/``). ``id``, ``tenant``,
``metadata`` (JSON), ``created_at`` (epoch ms) and, for texts, ``text`` are stored alongside the vector.
The collection description records model, kind and dim, checked before a collection is reused.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pymilvus import CollectionSchema

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


DEFAULT_TENANT = "default"  # everyone's tenant when the API runs without keys


def tenant_problem(tenant: object) -> str | None:
    """Why ``tenant`` cannot name a tenant, or None (it is part of every primary key: no '/')."""
    if not isinstance(tenant, str) or not TENANT_PATTERN.fullmatch(tenant):
        return f"tenant {tenant!r} must be 1–{TENANT_MAX_CHARS} letters, digits, '_', '.' or '-'"
    return None


def id_problem(item_id: object) -> str | None:
    """Why ``item_id`` cannot be an item id, or None. The one rule, checked at the API's edge and again by
    the stores: any text of 1–256 bytes of UTF-8 that is not blank and has no control characters. ``/``,
    quotes, brackets, backslashes and ``%`` are all fine: ids are data, never code or paths."""
    if not isinstance(item_id, str) or not item_id.strip():
        return "an item id must be a non-empty string"
    if _bad_unicode(item_id):
        return "an item id must be valid Unicode (it has an unpaired surrogate)"
    if (size := len(item_id.encode())) > ID_MAX_BYTES:
        return f"an item id must be at most {ID_MAX_BYTES} bytes of UTF-8, got {size}"
    if any(ord(c) < 32 or ord(c) == 127 for c in item_id):
        return "an item id must not contain control characters"
    return None


METADATA_MAX_DEPTH = 8
_INT64 = (-(2**63), 2**63 - 1)


def metadata_problem(value: object, depth: int = 0) -> str | None:
    """Why ``value`` cannot be stored as item metadata (Milvus JSON), or None: a JSON object whose integers
    fit in 64 bits, numbers are finite, strings are valid Unicode and nesting is at most 8 levels. Milvus
    refuses the rest with an error that would otherwise surface as a server fault."""
    if depth == 0 and not isinstance(value, dict):
        return "metadata must be a JSON object"
    if depth > METADATA_MAX_DEPTH:
        return f"metadata is nested more than {METADATA_MAX_DEPTH} levels deep"
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str) or _bad_unicode(key):
                return f"metadata key {key!r} must be valid Unicode text"
            if (problem := metadata_problem(inner, depth + 1)) is not None:
                return problem
    elif isinstance(value, list):
        for inner in value:
            if (problem := metadata_problem(inner, depth + 1)) is not None:
                return problem
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            return f"metadata integer {value} does not fit in 64 bits; send it as a string"
    elif isinstance(value, float):
        if not math.isfinite(value):
            return "metadata numbers must be finite (no NaN or Infinity)"
    elif isinstance(value, str):
        if _bad_unicode(value):
            return "metadata strings must be valid Unicode (one has an unpaired surrogate)"
    else:
        return f"metadata values must be JSON, not {type(value).__name__}"
    return None


def _bad_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def primary_key(tenant: str, item_id: str) -> str:
    return f"{tenant}/{item_id}"


def build_schema(model: str, kind: Kind, dim: int, *, tenant_partition_key: bool) -> CollectionSchema:
    # pymilvus here, not at the top: the limits above are imported by Settings, Ray workers and the CLI,
    # which should not pay pymilvus's ~0.4 s import for them.
    from pymilvus import DataType, MilvusClient

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
