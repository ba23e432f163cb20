"""The structured filter model and its compiler (no Milvus here; tests/service/test_store*.py run the
compiled expressions against real Milvus Lite and a real Milvus server)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.store.filters import FILTER_ERROR, MAX_CONDITIONS, Filter, compile_filter


def compiled(conditions: object, tenant: str | None = "t1") -> str:
    return compile_filter(Filter.model_validate(conditions), tenant)


def test_conditions_compile_to_and_of_typed_literals() -> None:
    expr = compiled(
        [
            {"field": "color", "op": "eq", "value": "红色"},
            {"field": "price", "op": "lt", "value": 9.5},
            {"field": "rank", "op": "gte", "value": 3},
            {"field": "sale", "op": "ne", "value": True},
            {"field": "shop", "op": "in", "value": ["a", "b"]},
            {"field": "created_at", "op": "gt", "value": 1700000000000},
            {"field": "id", "op": "in", "value": ["x1", "x2"]},
            {"field": "metadata.id", "op": "eq", "value": "m"},
            {"field": "size.w", "op": "lte", "value": 10},
        ]
    )
    assert expr == (
        'tenant == "t1" and (metadata["color"] == "红色") and (metadata["price"] < 9.5) and '
        '(metadata["rank"] >= 3) and (metadata["sale"] != true) and (metadata["shop"] == "a" or metadata["shop"] == "b") and '
        '(created_at > 1700000000000) and (id in ["x1", "x2"]) and (metadata["id"] == "m") and '
        '(metadata["size"]["w"] <= 10)'
    )


def test_any_of_groups_are_or_combined_and_dict_form_is_accepted() -> None:
    expr = compiled(
        {
            "all_of": [
                {"any_of": [{"field": "a", "op": "eq", "value": 1}, {"field": "b", "op": "eq", "value": 2}]}
            ]
        }
    )
    assert expr == 'tenant == "t1" and ((metadata["a"] == 1) or (metadata["b"] == 2))'


def test_no_filter_still_restricts_to_the_tenant() -> None:
    assert compile_filter(None, "acme") == 'tenant == "acme"'
    assert compile_filter(Filter(), None) == ""


@pytest.mark.parametrize(
    "value, literal",
    [
        ("'\" or 1==1 or \"'", '"\'\\" or 1==1 or \\"\'"'),
        ("a\\", '"a\\\\"'),
        ('\\" or tenant != "x', '"\\\\\\" or tenant != \\"x"'),
        ("line\nbreak", '"line\\nbreak"'),
    ],
)
def test_string_values_are_escaped_into_one_literal(value: str, literal: str) -> None:
    assert (
        compiled([{"field": "k", "op": "eq", "value": value}])
        == f'tenant == "t1" and (metadata["k"] == {literal})'
    )


def test_the_tenant_itself_is_escaped() -> None:
    assert compile_filter(None, 'a" or "1"=="1') == 'tenant == "a\\" or \\"1\\"==\\"1"'


@pytest.mark.parametrize(
    "bad",
    [
        [{"field": 'k"] or 1==1 or metadata["k', "op": "eq", "value": 1}],
        [{"field": "a b", "op": "eq", "value": 1}],
        [{"field": "1abc", "op": "eq", "value": 1}],
        [{"field": "a.b.c.d.e", "op": "eq", "value": 1}],
        [{"field": "k", "op": "like", "value": "x%"}],
        [{"field": "k", "op": "eq", "value": [1, 2]}],
        [{"field": "k", "op": "in", "value": 1}],
        [{"field": "k", "op": "in", "value": []}],
        [{"field": "k", "op": "in", "value": ["a", 1]}],
        [{"field": "k", "op": "lt", "value": True}],
        [{"field": "k", "op": "eq", "value": {"nested": 1}}],
        [{"field": "k", "op": "eq", "value": None}],
        [{"field": "k", "op": "lt", "value": float("nan")}],
        [{"field": "k", "op": "lt", "value": float("-inf")}],
        [{"field": "k", "op": "eq", "value": "x" * 513}],
        [{"field": "k", "op": "eq", "value": 2**63}],
        [{"field": "created_at", "op": "gt", "value": "yesterday"}],
        [{"field": "id", "op": "eq", "value": 5}],
        [{"field": "k", "op": "eq", "value": 1, "expr": "1 == 1"}],
        {"expression": 'tenant != "x"'},
        [{"field": "k", "op": "eq", "value": i} for i in range(MAX_CONDITIONS + 1)],
    ],
)
def test_malformed_filters_fail_validation_with_a_stable_code(bad: object) -> None:
    with pytest.raises(ValidationError) as info:
        Filter.model_validate(bad)
    types = {e["type"] for e in info.value.errors()}
    assert types, info.value
    # Our own checks report FILTER_ERROR; shape errors (unknown op, extra key, wrong type) keep pydantic's
    # types, which FastAPI reports the same way (422).
    assert types <= {
        FILTER_ERROR,
        "literal_error",
        "extra_forbidden",
        "too_long",
        "missing",
        "list_type",
        "bool_type",
        "int_type",
        "float_type",
        "string_type",
        "model_type",
        "model_attributes_type",
    }


def test_nan_and_infinity_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        Filter.model_validate_json('[{"field": "k", "op": "lt", "value": NaN}]')
    assert info.value.errors()
