"""A million precomputed vectors through ``tuwen load`` into the embedded Milvus server: time to load, time
to a settled index, then search latency and recall.

    .venv/bin/python bench/store_scale.py                                   # 1M × 512, the defaults
    .venv/bin/python bench/store_scale.py --vectors 200000 --index HNSW --method upsert

The vectors are a mixture of Gaussian clusters on the unit sphere (``bench/vector_search.py``'s generator:
CLIP embeddings are clustered, uniform random vectors are the worst case of every ANN index and no
real corpus); ``--clusters 0`` draws uniform random vectors instead. They are written as a `tuwen index`
output directory (Parquet shards, no thumbnails) and loaded by the real CLI in a subprocess, exactly as
after `tuwen index`: ``--method import`` (Milvus import tasks, the default for an empty collection on the
embedded server) or ``--method upsert`` (batched upserts). Then, in this process, the store is opened as the
service opens it and the script waits until the index has *settled*: every row in a sealed, indexed,
loaded segment and the set of segments unchanged for ``--quiet`` seconds (no compaction rewriting and
re-indexing them). Searches go through Tuwen's ``VectorStore`` one at a time, top 10; recall@10 is
against exact inner-product search in NumPy. Prints a table and writes JSON. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench scripts run from a checkout

from bench.common import TUWEN, machine, save_json  # noqa: E402
from bench.vector_search import DIM, exact_top, mixture, recall  # noqa: E402

MODEL = "bench-store-scale"
CATEGORIES = 10


def vectors(n: int, clusters: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if clusters == 0:
        both = rng.standard_normal((n + queries, DIM)).astype(np.float32)
        both /= np.linalg.norm(both, axis=1, keepdims=True)
        return both[:n], both[n:]
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return mixture(n, centres, rng), mixture(queries, centres, rng)


def write_index_output(out: Path, data: np.ndarray, shard_size: int) -> None:
    """A `tuwen index` output directory holding ``data`` as image items ``0..n-1`` (no thumbnails)."""
    import pyarrow as pa

    from service.indexing.shards import OutputDir, ShardResult, arrow_schema
    from service.indexing.sources import Row

    rows = [Row("image", str(i), f"bench:{i}") for i in range(len(data))]
    output = OutputDir(out)
    output.start(rows, shard_size, {"source": "bench", "model": MODEL, "dim": DIM})
    schema = arrow_schema(DIM)
    for index, start in enumerate(range(0, len(data), shard_size)):
        chunk = data[start : start + shard_size]
        ids = [str(i) for i in range(start, start + len(chunk))]
        table = pa.table(
            {
                "kind": ["image"] * len(ids),
                "id": ids,
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(chunk.reshape(-1)), DIM),
                "metadata": [f'{{"category": "c{int(i) % CATEGORIES}"}}' for i in ids],
                "text": [""] * len(ids),
                "thumbnail": pa.nulls(len(ids), pa.binary()),
            },
            schema=schema,
        )
        output.finish_shard(ShardResult(index, len(ids), len(ids)), table)


def segments(client: Any, name: str) -> list[tuple[int, int, str, str]]:
    """(segment id, rows, index name, state) of every segment the query node has loaded."""
    return sorted(
        (s.segment_id, s.num_rows, s.index_name, getattr(s.state, "name", str(s.state)))
        for s in client.list_loaded_segments(name)
    )


def wait_settled(store: Any, n: int, quiet_s: float, timeout_s: float) -> tuple[float, list[Any]]:
    """Seconds until every row is in a sealed, indexed segment and the segment set stays put for
    ``quiet_s``; the clock stops at the first moment of that final state."""
    from pymilvus import MilvusClient

    client, name = MilvusClient(store.live_uri), store.collections["image"]
    started = time.perf_counter()
    last: list[Any] = []
    since = started
    while time.perf_counter() - started < timeout_s:
        try:
            now = segments(client, name)
        except Exception as exc:
            print(f"  waiting: {exc}", flush=True)
            now = []
        if now != last:
            last, since = now, time.perf_counter()
            sealed = sum(r for _, r, idx, state in now if idx and state == "Sealed")
            print(
                f"  {time.perf_counter() - started:6.0f} s: {len(now)} segments, {sealed:,} of {n:,} rows "
                "sealed and indexed",
                flush=True,
            )
        settled = sum(r for _, r, idx, state in now if idx and state == "Sealed") == n
        if settled and time.perf_counter() - since >= quiet_s:
            client.close()
            return since - started, now
        time.sleep(2)
    raise SystemExit(f"the index did not settle in {timeout_s:.0f} s")


def measure(store: Any, queries: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    found, lat = [], []
    for q in queries:
        t0 = time.perf_counter()
        [hits] = store.search("image", [q.tolist()], top_k=10)
        lat.append(time.perf_counter() - t0)
        found.append([int(h.id) for h in hits])
    return found, np.array(lat)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vectors", type=int, default=1_000_000)
    p.add_argument("--clusters", type=int, default=4000, help="0: uniform random vectors")
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--method", choices=["import", "upsert"], default="import")
    p.add_argument("--index", help="TUWEN_MILVUS_INDEX_TYPE (default: the service's default)")
    p.add_argument("--index-params", help="TUWEN_MILVUS_INDEX_PARAMS (JSON)")
    p.add_argument("--search-params", help="TUWEN_MILVUS_SEARCH_PARAMS (JSON)")
    p.add_argument(
        "--sweep", help="after the main measurement, also search with PARAM=V1,V2,... (e.g. nprobe=32,64)"
    )
    p.add_argument("--shard-size", type=int, default=50_000)
    p.add_argument("--quiet", type=float, default=60, help="seconds without segment changes = settled")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--workdir", type=Path, help="keep the data here (default: a temp dir)")
    args = p.parse_args(argv)

    from service.config import Settings
    from service.indexing.load import open_store

    data, queries = vectors(args.vectors, args.clusters, args.queries)
    with tempfile.TemporaryDirectory(prefix="tuwen-bench-scale-") as tmp:
        work = args.workdir or Path(tmp)
        out, data_dir = work / "index", work / "data"
        t0 = time.perf_counter()
        write_index_output(out, data, args.shard_size)
        print(f"wrote {len(data):,} vectors as shards in {time.perf_counter() - t0:.0f} s", flush=True)
        env = {**os.environ, "TUWEN_DATA_DIR": str(data_dir)}
        for name, value in (
            ("TUWEN_MILVUS_INDEX_TYPE", args.index),
            ("TUWEN_MILVUS_INDEX_PARAMS", args.index_params),
            ("TUWEN_MILVUS_SEARCH_PARAMS", args.search_params),
        ):
            if value:
                env[name] = value
        command = [str(TUWEN), "load", str(out), "--no-progress"]
        command += ["--method", args.method]
        started = time.perf_counter()
        proc = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
        load_s = time.perf_counter() - started
        print(proc.stdout.strip(), proc.stderr.strip()[-2000:], sep="\n", flush=True)
        if proc.returncode:
            raise SystemExit(f"tuwen load failed ({proc.returncode})")
        print(f"tuwen load: {load_s:.0f} s", flush=True)

        settings = Settings(
            _env_file=None, **{k[6:].lower(): v for k, v in env.items() if k.startswith("TUWEN_")}
        )
        store = open_store(settings, MODEL, DIM)
        store.ensure_collections()
        settle_s, final = wait_settled(store, len(data), args.quiet, args.timeout)
        ready_s = load_s + settle_s
        print(f"settled {settle_s:.0f} s after the load: {len(final)} segments", flush=True)
        truth = exact_top(data, queries, 10)
        base = {
            "vectors": len(data),
            "dim": DIM,
            "clusters": args.clusters,
            "method": args.method,
            "index": store.index.index_type,
            "index_params": store.index.build_params,
            "load_s": round(load_s, 1),
            "settle_after_load_s": round(settle_s, 1),
            "ready_s": round(ready_s, 1),
            "segments": len(final),
            "queries": len(queries),
        }
        sweeps: list[dict[str, Any]] = [{}]
        if args.sweep:
            key, _, values = args.sweep.partition("=")
            sweeps += [{key: int(v)} for v in values.split(",")]
        store.close()
        rows = []
        for extra in sweeps:
            settings_now = settings.model_copy(
                update={"milvus_search_params": {**settings.milvus_search_params, **extra}}
            )
            store = open_store(settings_now, MODEL, DIM)
            store.search("image", [queries[0].tolist()], top_k=10)  # warm-up
            found, lat = measure(store, queries)
            rows.append(
                base
                | {
                    "search_params": store.index.search_params,
                    "p50_ms": round(float(np.median(lat)) * 1e3, 2),
                    "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 2),
                    "recall_at_10": round(recall(found, truth), 4),
                }
            )
            store.close()
            print(json.dumps(rows[-1]), flush=True)
    save_json("store_scale", {"machine": machine(), "command": sys.argv, "rows": rows})


if __name__ == "__main__":
    main()
