"""VectorStore against real Milvus: a Milvus Lite file and a real Milvus 2.3.5 server (one per module).

Tests share one store per backend (creating and loading collections costs seconds on a server) and
each writes as its own tenant, which the store guarantees keeps their rows apart.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pymilvus import MilvusClient

from service.store import Filter, InvalidItem, Item, SchemaMismatch, StoreUnavailable, VectorStore
from service.store.local_server import LocalMilvusServer
from service.store.schema import collection_name, id_problem
from tests.milvus_server import milvus_server

DIM = 16
_tenants = itertools.count()


def unit(seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return (v / np.linalg.norm(v)).tolist()


def ids(hits: list) -> list[str]:
    return [h.id for h in hits]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMilvusServer]:
    with milvus_server(tmp_path_factory.mktemp("milvus")) as srv:
        yield srv


@pytest.fixture(scope="module", params=["lite", pytest.param("server", marks=pytest.mark.slow)])
def uri(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "lite":
        return str(tmp_path_factory.mktemp("lite") / "items.db")
    return request.getfixturevalue("server").uri


@pytest.fixture(scope="module")
def store(uri: str) -> Iterator[VectorStore]:
    s = VectorStore(uri, model="Test-Model", dim=DIM, timeout_s=10)
    s.ensure_collections()
    yield s
    s.close()


@pytest.fixture
def tenant() -> str:
    return f"tenant-{next(_tenants)}"


def test_collections_are_named_after_the_model_and_kind() -> None:
    assert collection_name("ViT-B-16", "image") == "tuwen_vit_b_16_image"
    assert collection_name("chinese-clip/ViT-L-14@336px", "text") == "tuwen_chinese_clip_vit_l_14_336px_text"


def test_upsert_get_replace_delete(store: VectorStore, tenant: str) -> None:
    store.upsert(
        "image",
        [
            Item(id="a", vector=unit(1), tenant=tenant, metadata={"color": "红色"}),
            {"id": "b", "vector": unit(2), "tenant": tenant},
        ],
    )
    got = store.get("image", "a", tenant)
    assert got is not None and got.metadata == {"color": "红色"}
    assert np.allclose(got.vector, unit(1), atol=1e-6)
    store.upsert("image", [Item(id="a", vector=unit(3), tenant=tenant, metadata={"color": "蓝色"})])
    got = store.get("image", "a", tenant)
    assert got is not None and got.metadata == {"color": "蓝色"}
    assert np.allclose(got.vector, unit(3), atol=1e-6)
    [hits] = store.search("image", [unit(3)], top_k=5, tenant=tenant)
    assert ids(hits) == ["a", "b"] and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert store.delete("image", "a", tenant) is True
    assert store.delete("image", "a", tenant) is False
    assert store.get("image", "a", tenant) is None
    assert ids(store.search("image", [unit(3)], top_k=5, tenant=tenant)[0]) == ["b"]


def test_batched_search_and_texts_carry_their_caption(store: VectorStore, tenant: str) -> None:
    store.upsert(
        "text", [Item(id=f"t{i}", vector=unit(i), tenant=tenant, text=f"第{i}张图") for i in range(5)]
    )
    results = store.search("text", [unit(2), unit(4)], top_k=2, tenant=tenant)
    assert [r[0].id for r in results] == ["t2", "t4"]
    assert results[0][0].text == "第2张图" and results[0][0].created_at > 0


def test_a_tenant_never_sees_or_overwrites_another_tenants_items(store: VectorStore, tenant: str) -> None:
    acme, globex = f"{tenant}-acme", f"{tenant}-globex"
    store.upsert("image", [Item(id="same", vector=unit(1), tenant=acme, metadata={"owner": "acme"})])
    store.upsert("image", [Item(id="same", vector=unit(1), tenant=globex, metadata={"owner": "globex"})])
    store.upsert("image", [Item(id="only-globex", vector=unit(1), tenant=globex)])
    got = store.get("image", "same", acme)
    assert got is not None and got.metadata == {"owner": "acme"}
    assert store.get("image", "only-globex", acme) is None
    [hits] = store.search("image", [unit(1)], top_k=10, tenant=acme)
    assert [(h.id, h.metadata["owner"]) for h in hits] == [("same", "acme")]
    assert store.delete("image", "only-globex", acme) is False
    assert store.get("image", "only-globex", globex) is not None
    # A filter cannot widen the tenant: its conditions are ANDed after it.
    anything = Filter.model_validate([{"any_of": [{"field": "owner", "op": "ne", "value": "x"}]}])
    assert ids(store.search("image", [unit(1)], top_k=10, tenant=acme, filter=anything)[0]) == ["same"]


def test_structured_filters_select_rows(store: VectorStore, tenant: str) -> None:
    rows = [
        Item("r1", unit(1), tenant, {"color": "red", "price": 5, "sale": True}, created_at=1000),
        Item("r2", unit(2), tenant, {"color": "red", "price": 50, "sale": False}, created_at=2000),
        Item("b1", unit(3), tenant, {"color": "blue", "price": 7.5}, created_at=3000),
    ]
    store.upsert("image", rows)

    def matching(conditions: object) -> set[str]:
        [hits] = store.search(
            "image", [unit(1)], top_k=10, filter=Filter.model_validate(conditions), tenant=tenant
        )
        return set(ids(hits))

    assert matching([{"field": "color", "op": "eq", "value": "red"}]) == {"r1", "r2"}
    assert matching([{"field": "color", "op": "in", "value": ["blue", "green"]}]) == {"b1"}
    assert matching([{"field": "price", "op": "lt", "value": 10}]) == {"r1", "b1"}
    assert matching(
        [{"field": "price", "op": "gte", "value": 7.5}, {"field": "color", "op": "ne", "value": "blue"}]
    ) == {"r2"}
    assert matching([{"field": "sale", "op": "eq", "value": True}]) == {"r1"}
    assert matching([{"field": "created_at", "op": "gt", "value": 1500}]) == {"r2", "b1"}
    assert matching([{"field": "id", "op": "in", "value": ["r1", "b1"]}]) == {"r1", "b1"}
    either = {
        "any_of": [
            {"field": "color", "op": "eq", "value": "blue"},
            {"field": "price", "op": "eq", "value": 50},
        ]
    }
    assert matching([either]) == {"r2", "b1"}


INJECTIONS = [
    "'\" or 1==1 or \"'",
    '" or tenant != "',
    'x\\" or id != \\"',
    "\\",
    '\\\\"',
    '红色" || true || "',
    "é\u200b🙂\t",
    "z" * 512,
]


def test_an_injection_attempt_is_only_a_literal(store: VectorStore, tenant: str) -> None:
    for n, evil in enumerate(INJECTIONS):
        mine = f"{tenant}-{n}"
        store.upsert("image", [Item("plain", unit(1), mine, {"note": "plain"})])
        store.upsert("image", [Item("evil", unit(2), mine, {"note": evil})])
        store.upsert("image", [Item("elsewhere", unit(1), f"{mine}-other", {"note": evil})])

        def matching(op: str, field: str = "note", value: str = evil, tenant: str = mine) -> list[str]:
            flt = Filter.model_validate([{"field": field, "op": op, "value": value}])
            return ids(store.search("image", [unit(1)], top_k=10, filter=flt, tenant=tenant)[0])

        assert matching("eq") == ["evil"], evil
        assert matching("ne") == ["plain"], evil
        assert matching("eq", field="id") == [], evil
        # The same text as the *tenant* is only a tenant name that owns nothing.
        assert store.search("image", [unit(1)], top_k=10, tenant="x") == [[]]


def test_bad_items_and_queries_are_refused(store: VectorStore, tenant: str) -> None:
    bad_items = [
        ("image", Item("short", unit(1)[:-1], tenant)),
        ("image", Item("x" * 300, unit(1), tenant)),
        ("image", Item("nan", [float("nan")] * DIM, tenant)),
        ("image", Item("t", unit(1), "a/b")),
        ("text", Item("no-text", unit(1), tenant)),
    ]
    for kind, item in bad_items:
        with pytest.raises(InvalidItem):
            store.upsert(kind, [item])
    for top_k in (0, store.max_top_k + 1):
        with pytest.raises(InvalidItem):
            store.search("image", [unit(1)], top_k=top_k, tenant=tenant)
    with pytest.raises(InvalidItem):
        store.search("image", [unit(1)], tenant='" or "1" == "1')


def test_writes_survive_a_restart_and_other_dims_are_refused(
    store: VectorStore, uri: str, tenant: str
) -> None:
    store.upsert("text", [Item("kept", unit(7), tenant, {"k": 1}, text="保存的文字")])
    store.close()  # the module's store reconnects lazily on its next call

    again = VectorStore(uri, model="Test-Model", dim=DIM)
    got = again.get("text", "kept", tenant)
    assert got is not None and got.text == "保存的文字" and got.metadata == {"k": 1}
    assert ids(again.search("text", [unit(7)], top_k=1, tenant=tenant)[0]) == ["kept"]
    again.close()

    other_space = VectorStore(uri, model="Test-Model", dim=DIM * 2)
    with pytest.raises(SchemaMismatch, match="dim"):
        other_space.ensure_collections()
    other_space.close()


def test_a_collection_that_lost_its_vector_index_gets_it_back(uri: str, tenant: str) -> None:
    """Dropped by hand: without its index a collection cannot load, so the next store builds it again
    rather than failing every call."""
    first = VectorStore(uri, model="Lost-Index", dim=DIM, timeout_s=10)
    first.upsert("image", [Item("kept", unit(3), tenant, {"n": 3})])
    raw = MilvusClient(uri=first.live_uri)
    name = first.collections["image"]
    raw.release_collection(name)
    raw.drop_index(name, raw.list_indexes(name, field_name="vector")[0])
    assert raw.list_indexes(name, field_name="vector") == []
    raw.close()
    first.close()

    again = VectorStore(uri, model="Lost-Index", dim=DIM, timeout_s=10)
    [hits] = again.search("image", [unit(3)], top_k=1, tenant=tenant)
    assert ids(hits) == ["kept"] and hits[0].metadata == {"n": 3}
    again.close()


@pytest.mark.slow
def test_an_outage_raises_store_unavailable_and_the_store_recovers_without_a_restart(
    server: LocalMilvusServer, tenant: str
) -> None:
    # Last in the module: it stops and starts the module's server.
    store = VectorStore(server.uri, model="Test-Model", dim=DIM, timeout_s=3)
    store.upsert("image", [Item("before", unit(1), tenant, {"n": 1})])
    assert store.ping()

    server.stop()  # killed after a short grace period: the harsher outage
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.search("image", [unit(1)], top_k=3, tenant=tenant)
    with pytest.raises(StoreUnavailable):
        store.upsert("image", [Item("during", unit(2), tenant)])
    assert not store.ping()
    assert time.monotonic() - started < 20, "failures must be quick, not hang on the outage"

    server.start()  # same data directory and port
    [hits] = store.search("image", [unit(1)], top_k=3, tenant=tenant)
    assert [h.id for h in hits] == ["before"] and hits[0].metadata == {"n": 1}
    store.upsert("image", [Item("after", unit(2), tenant)])
    assert store.get("image", "after", tenant) is not None
    assert store.ping()
    store.close()


# Ids the API accepts, chosen to break a careless expression: the report's injection, quotes, brackets,
# backslashes (one broke pymilvus' `ids=` expression), `%`/`_` (LIKE wildcards), slashes, non-BMP text.
HOSTILE_IDS = [
    "a'] or pk like 'bob%' or pk in ['",
    'a"] or pk != "',
    "a\\",
    "\\",
    "\\'",
    "2024/trip/cat.jpg",
    "/leading/and/trailing/",
    "50%_off",
    "[x]",
    "é中文😀\u2028",
    " padded ",
]


def test_hostile_ids_address_exactly_their_own_item(store: VectorStore, tenant: str) -> None:
    victim = f"{tenant}-bob"
    store.upsert("text", [Item("secret", unit(9), victim, text="bob's")])
    for n, item_id in enumerate(HOSTILE_IDS):
        store.upsert("text", [Item(item_id, unit(n), tenant, {"n": n}, text=item_id)])
    for n, item_id in enumerate(HOSTILE_IDS):
        got = store.get("text", item_id, tenant)
        assert got is not None and got.id == item_id and got.metadata == {"n": n}, item_id
        assert store.get("text", item_id, victim) is None
    for item_id in HOSTILE_IDS:
        assert store.delete("text", item_id, tenant) is True, item_id
        assert store.get("text", item_id, tenant) is None
    # Nothing of the other tenant was read or deleted along the way.
    kept = store.get("text", "secret", victim)
    assert kept is not None and kept.text == "bob's"


def _api_ids() -> st.SearchStrategy[str]:
    awkward = st.text(alphabet="'\"\\[]()%_/ .*-=|&!aé中😀", min_size=1, max_size=24)
    anything = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40)
    return st.one_of(awkward, anything).filter(lambda s: id_problem(s) is None)


@settings(max_examples=25, deadline=None, database=None, derandomize=True)
@given(item_id=_api_ids(), other_id=_api_ids())
def test_any_accepted_id_round_trips_and_never_touches_another_tenant(
    store: VectorStore, item_id: str, other_id: str
) -> None:
    assume(other_id != item_id)
    mine, theirs = f"p{next(_tenants)}", f"p{next(_tenants)}"
    store.upsert("image", [Item(item_id, unit(1), mine, {"who": "me"})])
    # The other tenant has the same id and one more; neither may be touched by what `mine` does.
    store.upsert("image", [Item(item_id, unit(1), theirs, {"who": "them"}), Item(other_id, unit(2), theirs)])
    got = store.get("image", item_id, mine)
    assert got is not None and (got.id, got.tenant, got.metadata) == (item_id, mine, {"who": "me"})
    flt = Filter.model_validate([{"field": "id", "op": "eq", "value": item_id}])
    assert ids(store.search("image", [unit(1)], top_k=5, filter=flt, tenant=mine)[0]) == [item_id]
    assert store.delete("image", item_id, mine) is True
    assert store.get("image", item_id, mine) is None
    assert store.delete("image", item_id, mine) is False
    assert sorted(ids(store.search("image", [unit(1)], top_k=5, tenant=theirs)[0])) == sorted(
        {item_id, other_id}
    )
    theirs_item = store.get("image", item_id, theirs)
    assert theirs_item is not None and theirs_item.metadata == {"who": "them"}
