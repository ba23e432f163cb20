"""``VectorStore``: Tuwen's items in Milvus — upsert, get, delete and filtered search, per tenant.

Where the data lives (``uri``):
- ``http://host:19530`` / ``https://…`` (with ``token``): Milvus Standalone or Distributed.
- a local path ending in ``.db``: a Milvus Lite file (one process per file: run one app worker).
- any other local path: a directory where Tuwen runs a real Milvus 2.3.5 server of its own (the ``milvus``
  package), started with the store and stopped at exit. This is the embedded default.

Why a local server is the default, measured on this 2-core machine (shared with other jobs) at 100k ×
512 clustered vectors, top 10, one query at a time through this class (``bench/vector_search.py
--sizes 100000 --queries 50``): the 2.3.5 server answers in 4.2 ms p50 with HNSW (recall@10 1.0) and 9.9 ms
p50 with a metadata filter keeping 10% of the rows (IVF_FLAT: 3.8 / 8.5 ms) — the issue's target is
≤ 30 ms filtered. Milvus Lite 3.2.2 (the pymilvus default) scans every row whatever the index: ~100 ms a
query at 100k when the machine is quiet, 380 ms in the same run, and 4.4 s with the metadata filter. The server
is durable (write-ahead log replayed on restart; acknowledged writes survive a kill), starts in ~6–10 s,
uses 0.2–0.6 GB and needs no setup: the binary ships in the PyPI package. Older Lite releases (C++ core)
lack partition keys and HNSW. Typed scalar columns were not needed: JSON filters are fast on the server.

Guarantees: every call has a bounded timeout; an unreachable Milvus raises ``StoreUnavailable`` and the
next call reconnects (a dead local server is restarted). Searches use Session consistency: a process
reads its own writes (a search right after a write waits ~0.2 s for it) and otherwise never waits for
the server's latest timestamp as Strong does (~200 ms on every query). The tenant
is part of the primary key and of every compiled search expression, so a tenant never sees or
overwrites another tenant's rows.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymilvus import MilvusClient, MilvusException

from service.store.errors import SchemaMismatch, StoreError, StoreUnavailable
from service.store.filters import Filter, compile_filter, item_expression, literal
from service.store.indexes import Deployment, IndexSpec, choose_index
from service.store.local_server import LocalMilvusServer
from service.store.schema import (
    DEFAULT_TENANT,
    KINDS,
    SCHEMA_VERSION,
    Kind,
    build_schema,
    collection_name,
    existing_layout,
    primary_key,
)
from service.store.validation import check_item, check_search, check_tenant

log = logging.getLogger(__name__)

_OUTPUT = {"image": ["id", "metadata", "created_at"], "text": ["id", "metadata", "created_at", "text"]}
# Words in pymilvus errors that mean "cannot reach or not ready", not "bad request".
_UNAVAILABLE_WORDS = (
    "unavailable",
    "connect",
    "deadline",
    "timeout",
    "timed out",
    "not ready",
    "fail to get",
)


@dataclass(frozen=True)
class Item:
    """One stored item: ``vector`` is L2-normalised float32 of the collection's dim."""

    id: str
    vector: Sequence[float]
    tenant: str = DEFAULT_TENANT
    metadata: Mapping[str, Any] = field(default_factory=dict)
    text: str | None = None
    created_at: int | None = None  # epoch ms; set at upsert when None


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    metadata: dict[str, Any]
    text: str | None = None
    created_at: int | None = None


def deployment_of(uri: str) -> Deployment:
    if uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:")):
        return "remote"
    return "lite" if uri.endswith(".db") else "local"


class VectorStore:
    """Items of one model (``model``, ``dim``) in two collections, ``image`` and ``text``."""

    def __init__(
        self,
        uri: str,
        *,
        model: str,
        dim: int,
        token: str = "",
        index_type: str | None = None,
        index_params: dict[str, Any] | None = None,
        search_params: dict[str, Any] | None = None,
        tenant_partition_key: bool | None = None,
        consistency_level: str = "Session",
        timeout_s: float = 5.0,
        max_top_k: int = 1000,
    ) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.uri = uri
        self.model = model
        self.dim = dim
        self.deployment: Deployment = deployment_of(uri)
        self.index: IndexSpec = choose_index(self.deployment, index_type, index_params, search_params)
        self.max_top_k = min(max_top_k, self.index.max_top_k)
        self.tenant_partition_key = tenant_partition_key  # None: where the server supports it well
        self.consistency_level = consistency_level
        self.timeout_s = timeout_s
        self.collections: dict[Kind, str] = {k: collection_name(model, k) for k in KINDS}
        self.token = token  # also used by the bulk import's own connection
        self._server = LocalMilvusServer(uri) if self.deployment == "local" else None
        self._client: MilvusClient | None = None
        self._ready: set[Kind] = set()
        self._lock = threading.RLock()

    # -- connection ---------------------------------------------------------------------------------

    def _connect(self) -> MilvusClient:
        with self._lock:
            if self._client is not None:
                return self._client
            if self._server is not None and not self._server.running:
                if self._server.port is not None:
                    log.warning("the local Milvus server on %s stopped; restarting it", self.uri)
                self._server.start()
            uri = self._server.uri if self._server is not None else self.uri
            if self.deployment == "lite":
                Path(uri).parent.mkdir(parents=True, exist_ok=True)
            try:
                self._client = MilvusClient(uri=uri, token=self.token, timeout=self.timeout_s)
            except Exception as exc:
                raise StoreUnavailable(f"cannot connect to Milvus at {self.uri}: {exc}") from exc
            return self._client

    def _drop_client(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._ready.clear()
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[MilvusClient]:
        """Run one Milvus call; connection failures become ``StoreUnavailable`` and reset the client."""
        client = self._connect()
        try:
            yield client
        except StoreError:
            raise
        except Exception as exc:
            if _is_unavailable(exc):
                self._drop_client()
                raise StoreUnavailable(f"Milvus at {self.uri} is unavailable ({what}): {exc}") from exc
            raise

    @property
    def live_uri(self) -> str:
        """The URI a client connects to now: the embedded server's own address once it runs."""
        self._connect()
        return self._server.uri if self._server is not None else self.uri

    def count(self, kind: Kind) -> int:
        """Items of ``kind``, every tenant's (Strong: after every acknowledged write)."""
        name = self._ensure(kind)
        with self._call(f"count {name}") as client:
            rows = client.query(
                name,
                filter="",
                output_fields=["count(*)"],
                consistency_level="Strong",
                timeout=self.timeout_s,
            )
        return int(rows[0]["count(*)"])

    def ping(self) -> bool:
        """True when Milvus answers (readiness); never raises."""
        try:
            with self._call("ping") as client:
                client.list_collections(timeout=self.timeout_s)
            return True
        except Exception:
            return False

    def close(self) -> None:
        self._drop_client()
        if self._server is not None:
            self._server.stop()

    # -- collections --------------------------------------------------------------------------------

    def ensure_collections(self) -> None:
        # Side by side: Milvus takes ~3 s to load even an empty collection, nearly all of it waiting.
        self._connect()  # one client (and one embedded server start) before the threads share it
        with ThreadPoolExecutor(len(KINDS), thread_name_prefix="tuwen-ensure") as pool:
            for done in [pool.submit(self._ensure, kind) for kind in KINDS]:
                done.result()

    def _ensure(self, kind: Kind) -> str:
        name = self.collections[kind]
        if kind in self._ready:
            return name
        with self._call(f"prepare collection {name}") as client:
            if client.has_collection(name, timeout=self.timeout_s):
                self._check_existing(client, name, kind)
                if not client.list_indexes(name, field_name="vector", timeout=self.timeout_s):
                    # A collection without its vector index cannot load ("index not found" on every
                    # call, which no retry repairs): someone dropped it (Attu, a script). Rebuilt.
                    log.warning("collection %s has no vector index; building %s", name, self.index.index_type)
                    client.create_index(name, self._index_params(client), timeout=max(self.timeout_s, 60.0))
            else:
                client.create_collection(
                    name,
                    schema=build_schema(
                        self.model, kind, self.dim, tenant_partition_key=self._use_partition_key(client)
                    ),
                    index_params=self._index_params(client),
                    consistency_level=self.consistency_level,
                    timeout=self.timeout_s,
                )
            client.load_collection(name, timeout=max(self.timeout_s, 60.0))
            # After a (re)start the server replays its log in the background; one Strong read waits
            # for that, so that Session reads (which do not wait) see every acknowledged write.
            client.query(
                name,
                filter=f"pk == {literal('')}",
                output_fields=["pk"],
                limit=1,
                consistency_level="Strong",
                timeout=max(self.timeout_s, 60.0),
            )
        self._ready.add(kind)
        return name

    def _index_params(self, client: MilvusClient) -> Any:
        params = client.prepare_index_params()
        params.add_index(
            "vector",
            index_type=self.index.index_type,
            metric_type=self.index.metric_type,
            params=self.index.build_params,
        )
        return params

    def _use_partition_key(self, client: MilvusClient) -> bool:
        """Milvus 2.3 routes upserts to another partition than inserts when the tenant is a partition key:
        upserted rows vanish from tenant-filtered reads. Before 2.4 the tenant is a plain filtered field."""
        if self.tenant_partition_key is not None:
            return self.tenant_partition_key
        version = client.get_server_version(timeout=self.timeout_s)
        match = re.match(r"v?(\d+)\.(\d+)", version)
        return match is None or (int(match[1]), int(match[2])) >= (2, 4)

    def _check_existing(self, client: MilvusClient, name: str, kind: Kind) -> None:
        recorded, dim, fields = existing_layout(client.describe_collection(name, timeout=self.timeout_s))
        if dim != self.dim or recorded.get("model", self.model) != self.model:
            raise SchemaMismatch(
                f"collection {name!r} holds {recorded.get('model', 'another model')!r} vectors of dim {dim}, "
                f"not {self.model!r} of dim {self.dim}; embedding spaces never mix: use another model name "
                f"or drop that collection"
            )
        # Milvus Lite keeps no description: there the field names are the evidence.
        expected = {"pk", "id", "vector", "tenant", "metadata", "created_at"} | (
            {"text"} if kind == "text" else set()
        )
        if fields != expected or (
            recorded and (recorded.get("tuwen_schema"), recorded.get("kind")) != (SCHEMA_VERSION, kind)
        ):
            raise SchemaMismatch(
                f"collection {name!r} was not created by this version of Tuwen for {kind}s "
                f"(description {recorded or 'missing'}); drop it or point TUWEN_MILVUS_URI elsewhere"
            )

    # -- items --------------------------------------------------------------------------------------

    def upsert(self, kind: Kind, items: Iterable[Item | Mapping[str, Any]]) -> int:
        """Insert or replace items by (tenant, id); returns once Milvus has accepted them."""
        rows = [self._row(kind, item if isinstance(item, Item) else Item(**item)) for item in items]
        if not rows:
            return 0
        # The last of one call's items with the same id wins. Sent as they are, the 2.3.5 server would
        # answer reads with the first and searches with the last (Milvus Lite keeps the last).
        unique = list({row["pk"]: row for row in rows}.values())
        name = self._ensure(kind)
        with self._call(f"upsert into {name}") as client:
            client.upsert(name, unique, timeout=self.timeout_s)
        return len(rows)

    def _row(self, kind: Kind, item: Item) -> dict[str, Any]:
        vector = check_item(kind, item, self.dim)
        row: dict[str, Any] = {
            "pk": primary_key(item.tenant, item.id),
            "id": item.id,
            "vector": vector,
            "tenant": item.tenant,
            "metadata": dict(item.metadata),
            "created_at": item.created_at if item.created_at is not None else int(time.time() * 1000),
        }
        if kind == "text":
            row["text"] = item.text
        return row

    def get(self, kind: Kind, id: str, tenant: str = DEFAULT_TENANT) -> Item | None:
        check_tenant(tenant)
        name = self._ensure(kind)
        with self._call(f"get from {name}") as client:
            rows = client.query(
                name,
                filter=item_expression(primary_key(tenant, id), tenant),
                output_fields=[*_OUTPUT[kind], "vector", "tenant"],
                limit=1,
                consistency_level=self.consistency_level,
                timeout=self.timeout_s,
            )
        if not rows:
            return None
        row = rows[0]
        return Item(
            id=row["id"],
            vector=[float(x) for x in row["vector"]],
            tenant=row["tenant"],
            metadata=row.get("metadata") or {},
            text=row.get("text"),
            created_at=row.get("created_at"),
        )

    def delete(self, kind: Kind, id: str, tenant: str = DEFAULT_TENANT) -> bool:
        """Remove one item of ``tenant``; False when it did not exist. Returns once reads no longer see it."""
        if self.get(kind, id, tenant) is None:
            return False
        name = self._ensure(kind)
        expression = item_expression(primary_key(tenant, id), tenant)
        with self._call(f"delete from {name}") as client:
            client.delete(name, filter=expression, timeout=self.timeout_s)
            # Milvus 2.3 does not report a delete's timestamp, so Session reads could still see the row:
            # one Strong read waits until the server has applied the delete, for every later read.
            client.query(
                name,
                filter=expression,
                output_fields=["pk"],
                limit=1,
                consistency_level="Strong",
                timeout=self.timeout_s,
            )
        return True

    def search(
        self,
        kind: Kind,
        vectors: Sequence[Sequence[float]],
        top_k: int = 10,
        filter: Filter | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> list[list[Hit]]:
        """Nearest items of ``tenant`` for each query vector (inner product, best first)."""
        queries = check_search(vectors, top_k, tenant, dim=self.dim, max_top_k=self.max_top_k)
        name = self._ensure(kind)
        with self._call(f"search {name}") as client:
            results = client.search(
                name,
                data=queries,
                filter=compile_filter(filter, tenant),
                limit=top_k,
                output_fields=_OUTPUT[kind],
                search_params=self.index.search_params_for(top_k),
                consistency_level=self.consistency_level,
                timeout=self.timeout_s,
            )
        return [[_hit(h) for h in hits] for hits in results]


def _hit(raw: Mapping[str, Any]) -> Hit:
    entity = raw.get("entity") or {}
    return Hit(
        id=entity.get("id", ""),
        score=float(raw["distance"]),
        metadata=entity.get("metadata") or {},
        text=entity.get("text"),
        created_at=entity.get("created_at"),
    )


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError | OSError):
        return True
    if isinstance(exc, MilvusException):
        text = str(exc).lower()
        return any(word in text for word in _UNAVAILABLE_WORDS)
    try:
        import grpc
    except ImportError:  # pragma: no cover - pymilvus depends on grpc
        return False
    return isinstance(exc, grpc.RpcError)
