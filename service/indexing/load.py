"""`tuwen load`: put an index's Parquet shards into the model's Milvus collections and its thumbnails into
the service's thumbnail store.

Two ways in:

- **Upserts** (default; any deployment: the local server, Milvus Lite, Standalone/Distributed): batches
  of rows through ``VectorStore.upsert``, keyed ``<tenant>/<id>`` like POST /items, so a reload or a
  resumed load never duplicates an item. Loaded shards are recorded per target (``_loaded-*.json``), so a
  killed load resumes where it stopped.
- **Bulk import** (``--bulk-import [DEST]``): the shards are rewritten with the collections' own columns
  where Milvus can read them and imported by Milvus import tasks (``utility.do_bulk_insert``, one Parquet
  file a task), which skips the per-row RPCs. DEST is ``s3://bucket/prefix`` in Milvus's own bucket (the
  Compose/Helm MinIO; files are uploaded with boto3 and named by object key), or a directory Milvus reads
  at the same path: the embedded local server's local storage (the default, ``OUT/_import``) or a shared
  volume. An import *inserts*: Milvus does not deduplicate primary keys, so it is refused unless the
  target collections are empty; load with upserts to change existing items. Tested here on the embedded
  Milvus 2.3.5 server with local files; the S3 variant follows the Milvus docs but no Milvus with object
  storage ran here.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from service.commands.errors import CommandError
from service.config import Settings
from service.indexing.shards import OutputDir, read_json, write_json
from service.store import Item, StoreUnavailable, VectorStore, deployment_of
from service.store.schema import KINDS, Kind, primary_key
from service.thumbnails import ThumbnailStore, thumbnail_store

RETRY_FOR_S = 300.0  # a restarting Milvus: keep retrying a batch this long before giving up


def open_store(settings: Settings, model: str, dim: int) -> VectorStore:
    return VectorStore(
        settings.resolved_milvus_uri,
        model=model,
        dim=dim,
        token=settings.milvus_token.get_secret_value() if settings.milvus_token else "",
        index_type=settings.milvus_index_type,
        index_params=settings.milvus_index_params or None,
        search_params=settings.milvus_search_params or None,
        max_top_k=settings.max_top_k,
        timeout_s=max(settings.milvus_timeout_s, 60.0),  # big batches: not an interactive deadline
    )


def load(
    out: OutputDir,
    settings: Settings,
    tenant: str,
    batch_size: int = 1000,
    on_items: Callable[[int], None] = lambda n: None,
) -> int:
    """Upsert every finished shard not yet loaded into this target; returns the items loaded in all."""
    import pyarrow.parquet as pq

    plan = out.plan()
    ledger_path = out.root / f"_loaded-{_target_id(settings, tenant)}.json"
    ledger: dict[str, int] = read_json(ledger_path) or {}
    store = open_store(settings, plan["model"], plan["dim"])
    thumbnails = thumbnail_store(settings)
    try:
        store.ensure_collections()
        with ThreadPoolExecutor(8, thread_name_prefix="tuwen-thumbs") as pool:
            for index, path in out.shards():
                if str(index) in ledger:
                    continue
                table = pq.read_table(path)
                rows = table.to_pylist()
                for kind in KINDS:
                    of_kind = [r for r in rows if r["kind"] == kind]
                    for start in range(0, len(of_kind), batch_size):
                        chunk = of_kind[start : start + batch_size]
                        items = [_item(r, tenant) for r in chunk]
                        _retrying(lambda k=kind, i=items: store.upsert(k, i))  # type: ignore[misc]
                        if kind == "image":
                            _put_thumbnails(pool, thumbnails, tenant, chunk)
                        on_items(len(chunk))
                ledger[str(index)] = len(rows)
                write_json(ledger_path, ledger)
    finally:
        store.close()
    return sum(ledger.values())


def _item(row: dict[str, Any], tenant: str) -> Item:
    return Item(
        id=row["id"],
        vector=row["vector"],
        tenant=tenant,
        metadata=json.loads(row["metadata"] or "{}"),
        text=row["text"],
    )


def _put_thumbnails(
    pool: ThreadPoolExecutor, store: ThumbnailStore, tenant: str, rows: list[dict[str, Any]]
) -> None:
    # After the upsert, as POST /items does: a listed thumbnail never belongs to a write that failed.
    list(pool.map(lambda r: store.put(tenant, r["id"], r["thumbnail"]), [r for r in rows if r["thumbnail"]]))


def _retrying(call: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + RETRY_FOR_S
    wait = 0.5
    while True:
        try:
            return call()
        except StoreUnavailable:
            if time.monotonic() + wait > deadline:
                raise
            time.sleep(wait)
            wait = min(wait * 2, 8.0)


def _target_id(settings: Settings, tenant: str) -> str:
    """Which store a ledger is about: a load into another Milvus or tenant starts from the first shard."""
    uri = settings.resolved_milvus_uri
    thumbnails = settings.thumbnail_s3_uri or settings.resolved_thumbnail_dir.resolve()
    target = f"{uri if '://' in uri else Path(uri).resolve()}\0{tenant}\0{thumbnails}"
    return hashlib.sha256(target.encode()).hexdigest()[:16]


def bulk_import(
    out: OutputDir, settings: Settings, tenant: str, destination: str, timeout_s: float = 1800.0
) -> int:
    """Milvus import tasks over the shards, rewritten with the collections' columns (see the module
    docstring). ``destination``: ``s3://bucket/prefix`` in Milvus's own bucket, or a directory Milvus reads
    at the same path (its local storage; empty = OUT/_import, for the embedded local server)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pymilvus import connections, utility

    from service.store.local_server import LocalMilvusServer

    plan = out.plan()
    uri = settings.resolved_milvus_uri
    deployment = deployment_of(uri)
    if deployment == "lite":
        raise CommandError("Milvus Lite has no bulk import: load it without --bulk-import")
    if deployment == "local" and destination.startswith("s3://"):
        raise CommandError(
            "--bulk-import: the embedded local server reads local files; give a directory or nothing"
        )
    server = LocalMilvusServer(uri).start() if deployment == "local" else None
    store = open_store(
        settings.model_copy(update={"milvus_uri": server.uri}) if server else settings,
        plan["model"],
        plan["dim"],
    )
    alias = f"tuwen-import-{id(store)}"
    try:
        store.ensure_collections()
        token = settings.milvus_token.get_secret_value() if settings.milvus_token else ""
        connections.connect(alias=alias, uri=server.uri if server else uri, token=token)
        counts = _row_counts(alias, store.collections)
        if any(counts.values()):
            raise CommandError(
                f"the collections already hold items ({counts}); a bulk import would duplicate ids: "
                "load with upserts (without --bulk-import) instead"
            )
        put = _import_sink(destination or str(out.root / "_import"), settings)
        thumbnails = thumbnail_store(settings)
        now, expected, tasks = int(time.time() * 1000), dict.fromkeys(KINDS, 0), []
        for index, path in out.shards():
            table = pq.read_table(path)
            for kind in KINDS:
                rows = table.filter(pa.compute.equal(table["kind"], kind))
                if not rows.num_rows:
                    continue
                ids = rows["id"].to_pylist()
                columns: dict[str, Any] = {
                    "pk": [primary_key(tenant, i) for i in ids],
                    "id": ids,
                    # Milvus 2.3's Parquet reader takes list<float>, not fixed_size_list
                    "vector": rows["vector"].cast(pa.list_(pa.float32())),
                    "tenant": [tenant] * len(ids),
                    "metadata": rows["metadata"],
                    "created_at": pa.array([now] * len(ids), pa.int64()),
                }
                if kind == "text":
                    columns["text"] = rows["text"]
                file = put(f"{tenant}/{kind}/{index:05d}.parquet", pa.table(columns))
                tasks.append(utility.do_bulk_insert(store.collections[kind], files=[file], using=alias))
                expected[kind] += len(ids)
                if kind == "image":
                    for row in rows.select(["id", "thumbnail"]).to_pylist():
                        thumbnails.put(tenant, row["id"], row["thumbnail"])
        _wait_for_imports(alias, tasks, store.collections, expected, time.monotonic() + timeout_s)
        return sum(expected.values())
    finally:
        connections.disconnect(alias)
        store.close()
        if server is not None:
            server.stop()


def _import_sink(destination: str, settings: Settings) -> Callable[[str, Any], str]:
    """Where import files go; returns a writer of (relative name, table) → the path Milvus is given."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if destination.startswith("s3://"):
        import boto3

        bucket, _, prefix = destination.removeprefix("s3://").partition("/")
        s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url or None)

        def upload(name: str, table: Any) -> str:
            key = f"{prefix.strip('/')}/{name}".lstrip("/")
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            s3.put_object(Bucket=bucket, Key=key, Body=sink.getvalue().to_pybytes())
            return key  # Milvus reads object keys relative to its own bucket

        return upload
    root = Path(destination).resolve()

    def write(name: str, table: Any) -> str:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return str(path)  # local storage: Milvus reads absolute paths

    return write


def _wait_for_imports(
    alias: str, tasks: list[int], collections: dict[Kind, str], expected: dict[Kind, int], deadline: float
) -> None:
    """Until every task completed and the imported rows are searchable (their segments indexed and
    loaded: ~10 s after completion on the 2.3.5 server)."""
    from pymilvus import utility

    pending = list(tasks)
    while pending or _row_counts(alias, collections) != expected:
        if time.monotonic() > deadline:
            raise CommandError(f"Milvus import tasks {pending} did not finish in time; see the Milvus logs")
        for task in list(pending):
            state = utility.get_bulk_insert_state(task, using=alias)
            if state.state_name == "Failed":
                raise CommandError(f"Milvus import task {task} failed: {state.infos.get('failed_reason')}")
            if state.state_name == "Completed":
                pending.remove(task)
        time.sleep(1.0)


def _row_counts(alias: str, collections: dict[Kind, str]) -> dict[Kind, int]:
    from pymilvus import Collection

    return {
        kind: int(
            Collection(name, using=alias).query("", output_fields=["count(*)"], consistency_level="Strong")[
                0
            ]["count(*)"]
        )
        for kind, name in collections.items()
    }
