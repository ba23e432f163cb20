"""Structured search filters: the request model and its compiler to a Milvus boolean expression.

A request never carries an expression. It carries conditions ``{field, op, value}``, combined with AND
(``all_of``), optionally with one level of OR (``{"any_of": [...]}`` inside ``all_of``). Field names are
checked against a strict identifier pattern and values are typed and bounded; the compiler writes every
string as a JSON-escaped literal, so a value is only ever data.

Why literals, not pymilvus ``filter_params`` templates: the local Milvus 2.3.5 server (the embedded
default) predates expression templates (Milvus 2.5); one code path, tested against Milvus Lite and the
real server, is safer than two.

Fields: ``id`` and ``created_at`` (epoch ms) are the item's own fields; any other name is a key of the
item's metadata (``color`` → ``metadata["color"]``, nested ``a.b`` → ``metadata["a"]["b"]``); write
``metadata.id`` for a metadata key that is itself called ``id``. Malformed filters fail validation with the
error type ``invalid_filter`` (FastAPI reports it in its 422 body).
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic_core import PydanticCustomError

FILTER_ERROR = "invalid_filter"
MAX_CONDITIONS = 16
MAX_IN_VALUES = 100
MAX_STRING_CHARS = 512
_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MAX_DEPTH = 4
_INT64 = (-(2**63), 2**63 - 1)

Op = Literal["eq", "ne", "in", "lt", "lte", "gt", "gte"]
Scalar = StrictBool | StrictInt | StrictFloat | StrictStr
_OPS = {"eq": "==", "ne": "!=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
# Item fields a filter may name, and the value type each takes.
_TOP_LEVEL: dict[str, type] = {"id": str, "created_at": int}


def _invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError(FILTER_ERROR, message)


def _check_scalar(value: Any) -> None:
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            raise _invalid(f"a filter string is longer than {MAX_STRING_CHARS} characters")
        if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
            raise _invalid("a filter string contains an unpaired surrogate; send valid UTF-8")
    elif isinstance(value, float) and not math.isfinite(value):
        raise _invalid("a filter number must be finite")
    elif isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
        raise _invalid("a filter integer must fit in 64 bits")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, int | float) else "string"


class Condition(BaseModel):
    """One comparison: ``{"field": "color", "op": "eq", "value": "红色"}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: Annotated[str, Field(min_length=1, max_length=200, examples=["color", "created_at", "id"])]
    op: Op
    value: Scalar | Annotated[list[Scalar], Field(max_length=MAX_IN_VALUES)]

    @model_validator(mode="after")
    def _validate(self) -> Condition:
        segments = self.field.split(".")
        if segments[0] == "metadata" and len(segments) > 1:
            segments = segments[1:]
        if len(segments) > _MAX_DEPTH or not all(_SEGMENT.fullmatch(s) for s in segments):
            raise _invalid(
                f"filter field {self.field!r} is not allowed: use letters, digits and underscores "
                f"(dots for nesting, at most {_MAX_DEPTH} levels)"
            )
        values = self.value if isinstance(self.value, list) else [self.value]
        if self.op == "in":
            if not isinstance(self.value, list) or not self.value:
                raise _invalid("op 'in' takes a non-empty list of values")
            if len({_kind(v) for v in values}) > 1:
                raise _invalid("the values of op 'in' must all be strings, all numbers or all booleans")
        elif isinstance(self.value, list):
            raise _invalid(f"op {self.op!r} takes a single value, not a list")
        if self.op in ("lt", "lte", "gt", "gte") and isinstance(self.value, bool):
            raise _invalid(f"op {self.op!r} compares numbers or strings, not booleans")
        for value in values:
            _check_scalar(value)
        expected = _TOP_LEVEL.get(self.field)
        if expected is not None and not all(
            isinstance(v, expected) and not isinstance(v, bool) for v in values
        ):
            raise _invalid(f"filter field {self.field!r} takes {expected.__name__} values")
        return self


class AnyOf(BaseModel):
    """OR of conditions: ``{"any_of": [{...}, {...}]}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    any_of: Annotated[list[Condition], Field(min_length=1, max_length=MAX_CONDITIONS)]


class Filter(BaseModel):
    """AND of conditions (and OR groups). A bare list of conditions is accepted as ``all_of``."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "all_of": [
                        {"field": "color", "op": "eq", "value": "红色"},
                        {"field": "price", "op": "lt", "value": 100},
                        {"any_of": [{"field": "shop", "op": "in", "value": ["a", "b"]}]},
                    ]
                }
            ]
        },
    )

    all_of: Annotated[list[Condition | AnyOf], Field(max_length=MAX_CONDITIONS)] = []

    @model_validator(mode="before")
    @classmethod
    def _accept_list(cls, data: Any) -> Any:
        return {"all_of": data} if isinstance(data, list) else data

    @model_validator(mode="after")
    def _bounded(self) -> Filter:
        total = sum(len(c.any_of) if isinstance(c, AnyOf) else 1 for c in self.all_of)
        if total > MAX_CONDITIONS:
            raise _invalid(f"a filter has at most {MAX_CONDITIONS} conditions in all")
        return self


def literal(value: Any) -> str:
    """A Milvus expression literal: the one escaping function every expression Tuwen sends is built with
    (filters, primary-key reads and deletes). Strings are JSON-escaped (quotes, backslashes, control
    characters), which is exactly the escape syntax Milvus' expression grammar reads back; tested on Milvus
    Lite and the 2.3.5 server with quotes, brackets, backslashes, ``%``, ``/`` and non-BMP characters.
    Never let a library format a string into an expression (pymilvus' ``ids=`` does, unescaped)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"no Milvus literal for {type(value).__name__}")


def metadata_path(field: str) -> tuple[str, ...] | None:
    """The metadata keys a filter field names (``a.b`` → ``("a", "b")``), or None for an item field
    (``id``, ``created_at``). The one reading of field names: the compiler and the in-memory store use it."""
    if field in _TOP_LEVEL:
        return None
    segments = field.split(".")
    if segments[0] == "metadata" and len(segments) > 1:
        segments = segments[1:]
    return tuple(segments)


def field_expression(field: str) -> str:
    path = metadata_path(field)
    if path is None:
        return field
    return "metadata" + "".join(f"[{literal(s)}]" for s in path)


def _condition(cond: Condition) -> str:
    lhs = field_expression(cond.field)
    if cond.op == "in":
        assert isinstance(cond.value, list)
        if cond.field in _TOP_LEVEL:
            return f"{lhs} in [{', '.join(literal(v) for v in cond.value)}]"
        # Milvus Lite 3.x cannot put a JSON path left of `in`: spell it as equalities, which both read.
        return " or ".join(f"{lhs} == {literal(v)}" for v in cond.value)
    return f"{lhs} {_OPS[cond.op]} {literal(cond.value)}"


def item_expression(pk: str, tenant: str) -> str:
    """The expression selecting one item by primary key, and only within ``tenant`` (defence in depth: the
    key already starts with the tenant). Primary keys are user input like any filter value."""
    return f"pk == {literal(pk)} and tenant == {literal(tenant)}"


def compile_filter(filter: Filter | None, tenant: str | None = None) -> str:
    """The Milvus expression for ``filter``, restricted to ``tenant`` when given (always, for requests)."""
    parts: list[str] = []
    if tenant is not None:
        parts.append(f"tenant == {literal(tenant)}")
    for clause in filter.all_of if filter else []:
        if isinstance(clause, AnyOf):
            parts.append("(" + " or ".join(f"({_condition(c)})" for c in clause.any_of) + ")")
        else:
            parts.append(f"({_condition(clause)})")
    return " and ".join(parts)
