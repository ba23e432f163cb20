"""One contract, three stores: the in-memory store the fast API tests use, a Milvus Lite file and a real
Milvus 2.3.5 server (one per module, ``slow``). The same cases run on each, so the fake cannot drift.

Where Milvus Lite 3.x answers differently from the server, the case says so (``lite=``): the in-memory
store follows the server (the default deployment, and the Milvus that Standalone/Distributed run). Lite
treats a missing or null JSON key as SQL NULL (false under ``ne`` as well) and conflates booleans with
0 and 1; the server does neither.

Tests share one store per backend and each writes as its own tenant (the stores keep tenants apart).
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from service.store import Filter, InvalidItem, Item, VectorStore
from service.store.local_server import LocalMilvusServer
from service.store.memory import InMemoryStore
from service.store.protocol import SearchIndex
from service.store.schema import ID_MAX_BYTES, TEXT_MAX_BYTES, Kind
from tests.milvus_server import milvus_server

DIM = 16
MODEL = "Contract-Model"
_tenants = itertools.count()


def unit(seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return (v / np.linalg.norm(v)).tolist()


def ids(hits: list[Any]) -> list[str]:
    return [h.id for h in hits]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMilvusServer]:
    with milvus_server(tmp_path_factory.mktemp("milvus")) as srv:
        yield srv


@pytest.fixture(scope="module", params=["memory", "lite", pytest.param("server", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def store(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SearchIndex]:
    s: SearchIndex
    if backend == "memory":
        s = InMemoryStore(model=MODEL, dim=DIM)
    else:
        uri = (
            str(tmp_path_factory.mktemp("lite") / "m.db")
            if backend == "lite"
            else request.getfixturevalue("server").uri
        )
        # Strong: every case reads what it has just written.
        s = VectorStore(uri, model=MODEL, dim=DIM, consistency_level="Strong", timeout_s=30)
    s.ensure_collections()
    yield s
    s.close()


@pytest.fixture
def tenant() -> str:
    return f"tenant-{next(_tenants)}"


def test_both_stores_have_exactly_the_protocols_surface() -> None:
    def surface(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(member)
            for name, member in vars(cls).items()
            if not name.startswith("_") and callable(member)
        }

    protocol = surface(SearchIndex)
    assert set(protocol) == {
        "ensure_collections",
        "ping",
        "upsert",
        "get",
        "delete",
        "search",
        "count",
        "close",
    }
    for cls in (VectorStore, InMemoryStore):
        methods = surface(cls)
        assert set(methods) == set(protocol), cls
        for name, signature in protocol.items():
            got = methods[name].parameters
            want = signature.parameters
            assert list(got) == list(want), (cls, name)
            assert [p.default for p in got.values()] == [p.default for p in want.values()], (cls, name)


def test_the_store_is_a_search_index(store: SearchIndex) -> None:
    assert isinstance(store, SearchIndex)
    assert (store.model, store.dim, store.max_top_k) == (MODEL, DIM, 1000)
    assert store.ping() is True


def test_count_is_every_tenants_items_of_a_kind(store: SearchIndex, tenant: str) -> None:
    before = {kind: store.count(kind) for kind in ("image", "text")}  # a store shared by the module
    store.upsert("image", [Item(f"c{i}", unit(i), tenant) for i in range(3)])
    store.upsert("image", [Item("c0", unit(1), tenant), Item("c0", unit(1), f"{tenant}-other")])
    assert (
        store.count("image") == before["image"] + 4
    )  # a replaced id counts once; another tenant's is its own
    assert store.count("text") == before["text"]
    assert store.delete("image", "c1", tenant)
    assert store.count("image") == before["image"] + 3


def test_upsert_get_round_trip(store: SearchIndex, tenant: str) -> None:
    metadata = {
        "f": 5.0,
        "i": 5,
        "big": 2**62,
        "s": "红色\"'\\ ]",
        "b": True,
        "n": None,
        "l": [1, "a", None, False, 2.5],
        "o": {"p": {"q": []}},
    }
    before = int(time.time() * 1000)
    assert (
        store.upsert(
            "text",
            [
                Item("t1", unit(1), tenant, metadata, text="一只猫", created_at=1234),
                {
                    "id": "t2",
                    "vector": unit(2),
                    "tenant": tenant,
                    "text": "两只狗",
                },  # a mapping is an item too
            ],
        )
        == 2
    )
    after = int(time.time() * 1000)
    got = store.get("text", "t1", tenant)
    assert got is not None
    assert (got.id, got.tenant, got.text, got.created_at) == ("t1", tenant, "一只猫", 1234)
    # JSON kept its types: 5.0 stays a float, 5 an int
    assert json.dumps(got.metadata, sort_keys=True) == json.dumps(metadata, sort_keys=True)
    assert np.allclose(got.vector, unit(1), atol=1e-6) and len(got.vector) == DIM
    second = store.get("text", "t2", tenant)
    assert second is not None and second.metadata == {} and second.text == "两只狗"
    assert second.created_at is not None and before <= second.created_at <= after
    assert store.get("text", "absent", tenant) is None
    assert store.get("image", "t1", tenant) is None  # kinds are separate collections

    store.upsert("image", [Item("i1", unit(3), tenant, {"k": 1}, text="ignored for images")])
    image = store.get("image", "i1", tenant)
    assert image is not None and image.text is None and image.metadata == {"k": 1}


def test_upsert_replaces_by_id_and_the_last_duplicate_wins(store: SearchIndex, tenant: str) -> None:
    store.upsert("image", [Item("a", unit(1), tenant, {"v": 1}), Item("b", unit(2), tenant)])
    store.upsert("image", [Item("a", unit(3), tenant, {"v": 2})])
    got = store.get("image", "a", tenant)
    assert got is not None and got.metadata == {"v": 2} and np.allclose(got.vector, unit(3), atol=1e-6)
    [hits] = store.search("image", [unit(3)], top_k=10, tenant=tenant)
    assert ids(hits) == ["a", "b"] and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert (
        store.upsert("image", [Item("c", unit(4), tenant, {"v": 1}), Item("c", unit(5), tenant, {"v": 2})])
        == 2
    )
    got = store.get("image", "c", tenant)
    assert got is not None and got.metadata == {"v": 2}
    assert ids(store.search("image", [unit(5)], top_k=10, tenant=tenant)[0]).count("c") == 1


def test_delete_removes_once(store: SearchIndex, tenant: str) -> None:
    store.upsert("text", [Item("d", unit(1), tenant, text="删"), Item("keep", unit(2), tenant, text="留")])
    assert store.delete("text", "d", tenant) is True
    assert store.delete("text", "d", tenant) is False
    assert store.get("text", "d", tenant) is None
    assert ids(store.search("text", [unit(1)], top_k=5, tenant=tenant)[0]) == ["keep"]
    assert store.delete("text", "never-was", tenant) is False


def test_search_ranks_by_inner_product_best_first_and_keeps_top_k(store: SearchIndex, tenant: str) -> None:
    # Unit vectors at known angles from the query e0: scores are cos(angle), all distinct.
    angles = {"a0": 0.1, "a1": 0.5, "a2": 0.9, "a3": 1.3, "a4": 2.0, "a5": 2.8}

    def at(angle: float) -> list[float]:
        v = [0.0] * DIM
        v[0], v[1] = math.cos(angle), math.sin(angle)
        return v

    shuffled = ["a3", "a0", "a5", "a1", "a4", "a2"]
    store.upsert("text", [Item(k, at(angles[k]), tenant, text=k) for k in shuffled])
    query = at(0.0)
    [top3] = store.search("text", [query], top_k=3, tenant=tenant)
    assert ids(top3) == ["a0", "a1", "a2"]
    assert [h.score for h in top3] == pytest.approx(
        [math.cos(angles[k]) for k in ("a0", "a1", "a2")], abs=1e-5
    )
    assert [h.text for h in top3] == ["a0", "a1", "a2"] and all(h.created_at for h in top3)
    [everything] = store.search("text", [query], top_k=100, tenant=tenant)
    assert ids(everything) == sorted(angles, key=angles.__getitem__)  # fewer than top_k: all of them
    # Several queries in one call: one ranked list each, in order.
    opposite = [-x for x in query]
    near, far = store.search("text", [query, opposite], top_k=2, tenant=tenant)
    assert ids(near) == ["a0", "a1"] and ids(far) == ["a5", "a4"]
    assert store.search("text", [query, query], top_k=1, tenant=f"{tenant}-empty") == [[], []]


def test_a_tenant_never_sees_or_touches_another_tenants_items(store: SearchIndex, tenant: str) -> None:
    acme, globex = f"{tenant}-acme", f"{tenant}-globex"
    store.upsert("image", [Item("same", unit(1), acme, {"owner": "acme"})])
    store.upsert("image", [Item("same", unit(1), globex, {"owner": "globex"})])
    store.upsert("image", [Item("only-globex", unit(1), globex, {"owner": "globex"})])
    got = store.get("image", "same", acme)
    assert got is not None and got.metadata == {"owner": "acme"} and got.tenant == acme
    assert store.get("image", "only-globex", acme) is None
    [hits] = store.search("image", [unit(1)], top_k=10, tenant=acme)
    assert [(h.id, h.metadata["owner"]) for h in hits] == [("same", "acme")]
    # A filter cannot widen the tenant: its conditions are ANDed after it.
    anything = Filter.model_validate([{"any_of": [{"field": "owner", "op": "ne", "value": "x"}]}])
    assert ids(store.search("image", [unit(1)], top_k=10, tenant=acme, filter=anything)[0]) == ["same"]
    assert store.delete("image", "only-globex", acme) is False
    assert store.get("image", "only-globex", globex) is not None
    assert store.delete("image", "same", acme) is True
    still = store.get("image", "same", globex)
    assert still is not None and still.metadata == {"owner": "globex"}


def test_concurrent_writers_and_readers_lose_nothing(store: SearchIndex, tenant: str) -> None:
    # The API calls the store from many threads at once (one per request in flight).
    def work(worker: int) -> None:
        for n in range(5):
            item_id = f"w{worker}-{n}"
            store.upsert("image", [Item(item_id, unit(worker * 10 + n), tenant, {"worker": worker})])
            assert store.get("image", item_id, tenant) is not None
            store.search("image", [unit(n)], top_k=3, tenant=tenant)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(work, range(4)))
    [hits] = store.search("image", [unit(0)], top_k=100, tenant=tenant)
    assert sorted(ids(hits)) == sorted(f"w{w}-{n}" for w in range(4) for n in range(5))
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


# -- filters ------------------------------------------------------------------------------------------

# Metadata covering each way a value can be missing or of another type than a condition's value.
ROWS: dict[str, dict[str, Any]] = {
    "r1": {
        "color": "red",
        "price": 5,
        "sale": True,
        "size": {"w": 10, "unit": "cm"},
        "id": "m-1",
        "tags": ["a"],
    },
    "r2": {"color": "red", "price": 50, "sale": False, "size": {"w": 20}},
    "b1": {"color": "blue", "price": 7.5, "size": {"w": "10"}},
    "n1": {"color": None, "price": "5", "sale": 1, "size": None},
    "e1": {},
    "z1": {"color": "红色", "price": -1, "sale": 0, "size": 5},
}
CREATED = {"r1": 1000, "r2": 2000, "b1": 3000, "n1": 4000, "e1": 5000, "z1": 6000}
ALL = set(ROWS)


@dataclass(frozen=True)
class Case:
    conditions: list[Any] | dict[str, Any]
    expected: set[str]  # the server's answer, which the in-memory store must give
    lite: set[str] | None = None  # Milvus Lite's, where it differs


def c(field: str, op: str, value: Any) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


CASES: dict[str, Case] = {
    # eq: a value equals only values of its own kind; missing, null, lists and objects equal nothing
    "eq-string": Case([c("color", "eq", "red")], {"r1", "r2"}),
    "eq-unicode": Case([c("color", "eq", "红色")], {"z1"}),
    "eq-int-not-string": Case([c("price", "eq", 5)], {"r1"}),
    "eq-float-equals-int": Case([c("price", "eq", 5.0)], {"r1"}),
    "eq-string-not-int": Case([c("price", "eq", "5")], {"n1"}),
    "eq-negative": Case([c("price", "eq", -1)], {"z1"}),
    "eq-true": Case([c("sale", "eq", True)], {"r1"}, lite={"r1", "n1"}),
    "eq-false": Case([c("sale", "eq", False)], {"r2"}, lite={"r2", "z1"}),
    "eq-one-not-true": Case([c("sale", "eq", 1)], {"n1"}, lite={"r1", "n1"}),
    "eq-nested": Case([c("size.w", "eq", 10)], {"r1"}),
    "eq-nested-string": Case([c("metadata.size.w", "eq", "10")], {"b1"}),
    "eq-metadata-id": Case([c("metadata.id", "eq", "m-1")], {"r1"}),
    "eq-item-id": Case([c("id", "eq", "r1")], {"r1"}),
    "eq-missing-key": Case([c("nokey", "eq", "x")], set()),
    "eq-through-a-non-object": Case([c("size.w.deeper", "eq", 1)], set()),
    "eq-list-is-not-its-element": Case([c("tags", "eq", "a")], set()),
    # ne: exactly `not eq` on the server (missing, null and other kinds pass); Lite wants a non-null key
    "ne-string": Case([c("color", "ne", "red")], {"b1", "n1", "e1", "z1"}, lite={"b1", "z1"}),
    "ne-number": Case([c("price", "ne", 5)], ALL - {"r1"}, lite=ALL - {"r1", "e1"}),
    "ne-nested": Case([c("size.w", "ne", 10)], ALL - {"r1"}, lite={"r2", "b1"}),
    "ne-bool": Case([c("sale", "ne", True)], ALL - {"r1"}, lite={"r2", "z1"}),
    "ne-missing-key": Case([c("nokey", "ne", 1)], ALL, lite=set()),
    "ne-item-id": Case([c("id", "ne", "r1")], ALL - {"r1"}),
    "ne-created-at": Case([c("created_at", "ne", 1000)], ALL - {"r1"}),
    # lt lte gt gte: numbers with numbers, strings with strings (code point order); never booleans
    "lt-number": Case([c("price", "lt", 10)], {"r1", "b1", "z1"}),
    "lte-float": Case([c("price", "lte", 7.5)], {"r1", "b1", "z1"}),
    "gt-number": Case([c("price", "gt", 5)], {"r2", "b1"}),
    "gte-number": Case([c("price", "gte", 50)], {"r2"}),
    "lt-string": Case([c("color", "lt", "red")], {"b1"}),
    "gte-string-unicode": Case([c("color", "gte", "red")], {"r1", "r2", "z1"}),
    "lt-string-not-number": Case([c("price", "lt", "6")], {"n1"}),
    "lt-skips-booleans": Case([c("sale", "lt", 1)], {"z1"}, lite={"r2", "z1"}),
    "gt-nested": Case([c("size.w", "gt", 15)], {"r2"}),
    "gt-created-at": Case([c("created_at", "gt", 1500)], ALL - {"r1"}),
    "lte-created-at": Case([c("created_at", "lte", 2000)], {"r1", "r2"}),
    "lt-item-id": Case([c("id", "lt", "b2")], {"b1"}),
    "gte-item-id": Case([c("id", "gte", "r")], {"r1", "r2", "z1"}),
    "lt-missing-key": Case([c("nokey", "lt", 1)], set()),
    # in: any of the values, by the rules of eq
    "in-strings": Case([c("color", "in", ["blue", "green"])], {"b1"}),
    "in-numbers": Case([c("price", "in", [5, 50])], {"r1", "r2"}),
    "in-strings-not-numbers": Case([c("price", "in", ["5", "x"])], {"n1"}),
    "in-item-ids": Case([c("id", "in", ["r1", "b1", "nope"])], {"r1", "b1"}),
    "in-created-at": Case([c("created_at", "in", [1000, 3000])], {"r1", "b1"}),
    "in-bool": Case([c("sale", "in", [True])], {"r1"}, lite={"r1", "n1"}),
    "in-nested": Case([c("size.w", "in", [20, 30])], {"r2"}),
    "in-nested-strings": Case([c("size.w", "in", ["10", "x"])], {"b1"}),
    # combinations: all_of ANDs, any_of ORs
    "any-of": Case([{"any_of": [c("color", "eq", "blue"), c("price", "eq", 50)]}], {"r2", "b1"}),
    "all-of-with-any-of": Case(
        [c("price", "gte", 5), {"any_of": [c("color", "eq", "red"), c("size.w", "eq", "10")]}],
        {"r1", "r2", "b1"},
    ),
    "all-of": Case([c("price", "gte", 7.5), c("color", "ne", "blue")], {"r2"}),
    "all-of-object-form": Case({"all_of": [c("price", "lt", 6), c("sale", "eq", True)]}, {"r1"}),
    "any-of-ne-missing": Case([{"any_of": [c("nokey", "ne", 1)]}], ALL, lite=set()),
    "empty": Case([], ALL),
}


@pytest.fixture(scope="module")
def filter_tenant(store: SearchIndex) -> str:
    tenant = "filters"
    items = [Item(k, unit(i), tenant, m, created_at=CREATED[k]) for i, (k, m) in enumerate(ROWS.items())]
    store.upsert("image", items)
    store.upsert("image", [Item("r1", unit(0), "filters-other", ROWS["r1"])])  # never in these results
    return tenant


@pytest.mark.parametrize("name", list(CASES))
def test_filter(store: SearchIndex, backend: str, filter_tenant: str, name: str) -> None:
    case = CASES[name]
    flt = Filter.model_validate(case.conditions)
    [hits] = store.search("image", [unit(0)], top_k=50, filter=flt, tenant=filter_tenant)
    expected = case.lite if backend == "lite" and case.lite is not None else case.expected
    assert set(ids(hits)) == expected
    assert len(hits) == len(set(ids(hits)))


# -- input no store takes -----------------------------------------------------------------------------


def test_bad_items_are_refused_all_or_none(store: SearchIndex, tenant: str) -> None:
    bad_items: list[tuple[Kind, Item]] = [
        ("image", Item("short", unit(1)[:-1], tenant)),
        ("image", Item("long", [*unit(1), 0.0], tenant)),
        ("image", Item("nan", [float("nan")] * DIM, tenant)),
        ("image", Item("inf", [float("inf"), *unit(1)[1:]], tenant)),
        ("image", Item("x" * (ID_MAX_BYTES + 1), unit(1), tenant)),
        ("image", Item("猫" * 86, unit(1), tenant)),  # 258 bytes of UTF-8
        ("image", Item("", unit(1), tenant)),
        ("image", Item("   ", unit(1), tenant)),
        ("image", Item("tab\there", unit(1), tenant)),
        ("image", Item("t", unit(1), "a/b")),
        ("image", Item("t", unit(1), "")),
        ("image", Item("t", unit(1), "x" * 65)),
        ("image", Item("t", unit(1), tenant, {"bad": float("nan")})),
        ("image", Item("t", unit(1), tenant, {"big": 2**64})),
        ("text", Item("no-text", unit(1), tenant)),
        ("text", Item("too-long", unit(1), tenant, text="字" * (TEXT_MAX_BYTES // 3 + 1))),
    ]
    for kind, item in bad_items:
        with pytest.raises(InvalidItem):
            store.upsert(kind, [Item("good", unit(2), tenant, text="好"), item])
        assert store.get(kind, "good", tenant) is None, item  # nothing of a refused call is written
    ok_ids = ["x" * ID_MAX_BYTES, "猫" * 85, "a/b c?d#e%f\"g'h\\i"]
    assert store.upsert("image", [Item(i, unit(1), tenant) for i in ok_ids]) == len(ok_ids)
    assert all(store.get("image", i, tenant) is not None for i in ok_ids)
    assert store.upsert("image", []) == 0


def test_bad_searches_and_tenants_are_refused(store: SearchIndex, tenant: str) -> None:
    for top_k in (0, -1, store.max_top_k + 1):
        with pytest.raises(InvalidItem):
            store.search("image", [unit(1)], top_k=top_k, tenant=tenant)
    assert store.search("image", [unit(1)], top_k=store.max_top_k, tenant=tenant) == [[]]
    for vectors in ([], [unit(1)[:-1]], [unit(1), [*unit(1), 1.0]]):
        with pytest.raises(InvalidItem):
            store.search("image", vectors, top_k=1, tenant=tenant)
    for bad_tenant in ('" or "1" == "1', "a/b", "", "x" * 65):
        with pytest.raises(InvalidItem):
            store.search("image", [unit(1)], top_k=1, tenant=bad_tenant)
        with pytest.raises(InvalidItem):
            store.get("image", "x", bad_tenant)
        with pytest.raises(InvalidItem):
            store.delete("image", "x", bad_tenant)
