"""`tuwen load`: put an index's Parquet shards into the model's Milvus collections and its thumbnails into
the service's thumbnail store.

Two ways in (``--method``; ``auto`` says which it took):

- **Bulk import** (``auto`` on the embedded local server, or wherever ``--import-to`` names files Milvus
  can read, when the target collections are empty): the shards are rewritten with the collections' own
  columns, in files of about a segment (``IMPORT_FILE_BYTES``), and taken in by Milvus import tasks
  (``utility.do_bulk_insert``) without per-row RPCs; the command returns once the index covers every row. The
  destination is ``s3://bucket/prefix`` in Milvus's own bucket (the Compose/Helm MinIO: uploaded with boto3,
  named by object key) or a directory Milvus reads at the same path: the embedded server's local storage
  (default ``OUT/_import``) or a shared volume. An import *inserts* (Milvus does not deduplicate primary
  keys), so it is refused into non-empty collections; the shards are then recorded as loaded, and a
  rerun upserts. Tested on Milvus 2.3.5 both ways: local files on the embedded server, and ``s3://``
  with the server's storage in an S3 bucket (moto's S3 server standing in for MinIO).
- **Upserts** (everything else: Milvus Lite, a server without ``--import-to``, non-empty collections):
  batches of rows through ``VectorStore.upsert``, keyed ``<tenant>/<id>`` like POST /items, so a reload or
  a resumed load never duplicates an item. Loaded shards are recorded per target (``_loaded-*.json``), so
  a killed load resumes where it stopped; import tasks Milvus still runs from a killed import are waited
  for first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from service.commands.errors import CommandError
from service.config import Settings
from service.indexing.shards import OutputDir, read_json, write_json
from service.store import Item, StoreUnavailable, VectorStore
from service.store.schema import KINDS, Kind, primary_key
from service.thumbnails import ThumbnailStore, thumbnail_store

Method = Literal["auto", "import", "upsert"]
RETRY_FOR_S = 300.0  # a restarting Milvus: keep retrying a batch this long before giving up
IMPORT_FILE_BYTES = 1 << 30  # about two 512 MB segments (Milvus 2.3's default) of vectors per import task
IMPORT_TIMEOUT_S = 3600.0
# Below this many rows upserts are as fast: an import costs ~35 s whatever its size on the embedded 2.3.5
# server (5k rows: import 41 s, upserts 19 s; 50k: 42 s vs 46 s; 200k: 128 s vs 234 s; bench/store_scale.py).
IMPORT_MIN_ROWS = 50_000


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
    store: VectorStore,
    settings: Settings,
    tenant: str,
    batch_size: int = 1000,
    on_items: Callable[[int], None] = lambda n: None,
) -> int:
    """Upsert every finished shard not yet loaded into this target; returns the items loaded in all."""
    import pyarrow.parquet as pq

    ledger_path = _ledger_path(out, settings, tenant)
    ledger: dict[str, int] = read_json(ledger_path) or {}
    thumbnails = thumbnail_store(settings)
    with ThreadPoolExecutor(8, thread_name_prefix="tuwen-thumbs") as pool:
        for index, path in out.shards():
            if str(index) in ledger:
                continue
            rows = pq.read_table(path).to_pylist()
            writes: list[Future[None]] = []
            for kind in KINDS:
                of_kind = [r for r in rows if r["kind"] == kind]
                for start in range(0, len(of_kind), batch_size):
                    chunk = of_kind[start : start + batch_size]
                    items = [_item(r, tenant) for r in chunk]
                    _retrying(lambda k=kind, i=items: store.upsert(k, i))  # type: ignore[misc]
                    if kind == "image":  # written while the next batch is upserted
                        writes += _put_thumbnails(pool, thumbnails, tenant, chunk)
                    on_items(len(chunk))
            _finish(writes)  # before the ledger says the shard is loaded
            ledger[str(index)] = len(rows)
            write_json(ledger_path, ledger)
    return sum(ledger.values())


def _ledger_path(out: OutputDir, settings: Settings, tenant: str) -> Path:
    return out.root / f"_loaded-{_target_id(settings, tenant)}.json"


def _shard_items(out: OutputDir) -> dict[int, int]:
    """What a ledger records for each shard: its items that have a vector (the failed ones are not)."""
    return {index: result.embedded for index, result in out.done().items()}


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
) -> list[Future[None]]:
    # After the upsert, as POST /items does: a listed thumbnail never belongs to a write that failed.
    return [pool.submit(store.put, tenant, r["id"], r["thumbnail"]) for r in rows if r["thumbnail"]]


def _finish(writes: list[Future[None]]) -> None:
    """Wait for thumbnail writes; the first that failed raises."""
    for write in writes:
        write.result()


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


def choose_method(
    store: VectorStore, method: Method, import_to: str, rows: int
) -> Literal["import", "upsert"]:
    """``auto``: import ``rows`` items into empty collections where Milvus reads the files without more
    set-up (the embedded server's local storage, or an ``--import-to`` destination), when there are enough
    of them to pay for an import's fixed cost (``IMPORT_MIN_ROWS``); upserts otherwise."""
    if method != "auto":
        return method
    if (
        store.deployment == "lite"
        or (store.deployment == "remote" and not import_to)
        or rows < IMPORT_MIN_ROWS
    ):
        return "upsert"
    return "import" if not any(store.count(kind) for kind in KINDS) else "upsert"


def load_shards(
    out: OutputDir,
    settings: Settings,
    tenant: str,
    method: Method = "auto",
    import_to: str = "",
    batch_size: int = 1000,
    on_items: Callable[[int], None] = lambda n: None,
) -> tuple[str, int]:
    """Load by the method asked for (or chosen, see ``choose_method``); returns (method used, items)."""
    plan = out.plan()
    store = open_store(settings, plan["model"], plan["dim"])
    try:
        store.ensure_collections()
        if store.deployment == "lite" and method == "import":
            raise CommandError("Milvus Lite has no bulk import: load with --method upsert")
        if store.deployment == "local" and import_to.startswith("s3://"):
            raise CommandError(
                "--import-to: the embedded local server reads local files; give a directory or nothing"
            )
        used = choose_method(store, method, import_to, out.counts()["embedded"])
        if used == "import":
            loaded = bulk_import(
                out, store, settings, tenant, import_to or str(out.root / "_import"), on_items
            )
            # Recorded as loaded, so a rerun (which upserts into the now non-empty collections) skips them.
            write_json(_ledger_path(out, settings, tenant), {str(i): n for i, n in _shard_items(out).items()})
            return used, loaded
        _wait_for_running_imports(store)
        loaded = load(out, store, settings, tenant, batch_size, on_items)
        _seal_and_index(store)
        return used, loaded
    finally:
        store.close()


def bulk_import(
    out: OutputDir,
    store: VectorStore,
    settings: Settings,
    tenant: str,
    destination: str,
    on_items: Callable[[int], None] = lambda n: None,
) -> int:
    """Milvus import tasks over the shards, rewritten with the collections' columns (see the module
    docstring). ``destination``: ``s3://bucket/prefix`` in Milvus's own bucket, or a directory Milvus reads
    at the same path (its local storage, for the embedded server)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    counts = {kind: store.count(kind) for kind in KINDS}
    if any(counts.values()):
        raise CommandError(
            f"the collections already hold items ({counts}); a bulk import would duplicate ids: "
            "load with --method upsert instead"
        )
    put = _import_sink(destination, settings)
    thumbnails = thumbnail_store(settings)
    now, expected, tasks = int(time.time() * 1000), dict.fromkeys(KINDS, 0), list[int]()
    # Files of about a segment or more: Milvus cuts an import into full-size segments, so there are no
    # small ones for compaction to merge and the index to build again (the 1M-vector re-indexing churn).
    rows_per_file = max(1, IMPORT_FILE_BYTES // (4 * store.dim + 256))
    pending: dict[Kind, list[Any]] = {kind: [] for kind in KINDS}
    writes: list[Future[None]] = []

    with _orm_connection(store) as alias, ThreadPoolExecutor(8, thread_name_prefix="tuwen-thumbs") as pool:

        def submit(kind: Kind) -> None:
            table = pa.concat_tables(pending[kind])
            pending[kind] = []
            # Named by this run and order, never by user input (a tenant may be ".."): no path from data.
            file = put(f"{kind}/{now}-{len(tasks):05d}.parquet", table)
            with _orm() as utility:
                tasks.append(utility.do_bulk_insert(store.collections[kind], [file], using=alias))
            expected[kind] += table.num_rows
            on_items(table.num_rows)

        for _, path in out.shards():
            table = pq.read_table(path)
            _finish(writes)  # the last shard's thumbnails, written meanwhile: at most a shard held in memory
            writes = []
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
                pending[kind].append(pa.table(columns))
                if kind == "image":
                    writes += _put_thumbnails(
                        pool, thumbnails, tenant, rows.select(["id", "thumbnail"]).to_pylist()
                    )
                if sum(t.num_rows for t in pending[kind]) >= rows_per_file:
                    submit(kind)
        for kind in KINDS:
            if pending[kind]:
                submit(kind)
        _finish(writes)
        _wait_for_imports(store, alias, tasks, expected)
    return sum(expected.values())


def _seal_and_index(store: VectorStore) -> None:
    """After upserts: seal what they left in growing segments (searched through a small interim index,
    and sealed by the server only after 10 idle minutes) and wait until no segment waits for its index."""
    if store.deployment == "lite":  # one file, no segments to seal
        return
    from pymilvus import Collection

    with _orm_connection(store) as alias:
        with _orm(), ThreadPoolExecutor(len(KINDS)) as pool:  # side by side: a flush is mostly waiting
            names = list(store.collections.values())
            list(pool.map(lambda name: Collection(name, using=alias).flush(), names))
        _until(lambda: _indexed(store, alias), "Milvus did not finish indexing the loaded rows in time", 0.5)


def _until(done: Callable[[], bool], timeout_message: str, poll_s: float = 1.0) -> None:
    """Poll ``done`` until it holds, for at most ``IMPORT_TIMEOUT_S``."""
    deadline = time.monotonic() + IMPORT_TIMEOUT_S
    while not done():
        if time.monotonic() > deadline:
            raise CommandError(f"{timeout_message}; see the Milvus logs")
        time.sleep(poll_s)


def _indexed(store: VectorStore, alias: str) -> bool:
    """Whether no segment of either collection waits for its index."""
    with _orm() as utility:
        progress = [utility.index_building_progress(name, using=alias) for name in store.collections.values()]
    # Not indexed_rows == total_rows: segments under 1,024 rows are never indexed (searched brute force).
    return all(p.get("pending_index_rows", 0) == 0 for p in progress)


@contextlib.contextmanager
def _orm_connection(store: VectorStore) -> Iterator[str]:
    """An ORM connection to the store's server: Milvus 2.3's import API exists only in pymilvus' ORM."""
    from pymilvus import connections

    alias = f"tuwen-import-{id(store)}"
    with _orm():
        connections.connect(alias=alias, uri=store.live_uri, token=store.token)
    try:
        yield alias
    finally:
        with _orm():
            connections.disconnect(alias)


@contextlib.contextmanager
def _orm() -> Iterator[Any]:
    """pymilvus' ``utility``, its deprecation warnings silenced: MilvusClient has no import call for a
    2.3 server, and the warnings would only clutter the command's output."""
    from pymilvus import utility

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # PyMilvusDeprecationWarning
        yield utility


def _wait_for_running_imports(store: VectorStore) -> None:
    """Upserts after a killed import: wait for import tasks Milvus still runs on these collections, or
    their rows would land after (and beside) the upserted ones."""
    if store.deployment == "lite":
        return

    def none_running() -> bool:
        with _orm() as utility:
            return not any(
                t.state_name not in ("Completed", "Failed", "Failed and cleaned")
                for name in store.collections.values()
                for t in utility.list_bulk_insert_tasks(collection_name=name, using=alias)
            )

    with _orm_connection(store) as alias:
        _until(none_running, "Milvus import tasks from an earlier load are still running", poll_s=2.0)


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


def _wait_for_imports(store: VectorStore, alias: str, tasks: list[int], expected: dict[Kind, int]) -> None:
    """Until every task completed, the imported rows are loaded, and no segment waits for its index: a
    2.3 server reports an import completed before its segments are indexed (searches scan them until
    then)."""
    pending = list(tasks)

    def finished() -> bool:
        for task in list(pending):
            with _orm() as utility:
                state = utility.get_bulk_insert_state(task, using=alias)
            if state.state_name.startswith("Failed"):
                raise CommandError(f"Milvus import task {task} failed: {state.infos.get('failed_reason')}")
            if state.state_name == "Completed":
                pending.remove(task)
        return not pending and {k: store.count(k) for k in KINDS} == expected and _indexed(store, alias)

    _until(finished, f"Milvus import tasks {tasks} did not all finish in time")
