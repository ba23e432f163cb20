"""Vector search: latency, QPS and recall@10 against exact search, per Milvus deployment and index.

    .venv/bin/python bench/vector_search.py --sizes 100000            # add 1000000 if you have the time
    .venv/bin/python bench/vector_search.py --sizes 100000 --configs server-HNSW lite-FLAT

Vectors are realistic, not uniform: a mixture of a few thousand Gaussian clusters on the unit sphere
(dim 512), normalised; queries are fresh draws from the same mixture. Every configuration goes through
Tuwen's own ``VectorStore`` (the service's code path: tenant in the expression, Session consistency) and
is measured single-client, one query at a time, top 10: unfiltered, and with a metadata filter that keeps
10% of the rows (``{"field": "category", "op": "eq", ...}`` → ``metadata["category"] == ...``). Recall is
against exact inner-product search in NumPy (restricted to the filtered rows for the filtered figure).
``server-*`` runs a real Milvus 2.3.5 server (the ``milvus`` package, Tuwen's embedded default); ``lite-*``
runs Milvus Lite 3.x. GPU_CAGRA needs a GPU Milvus build (``--configs remote-GPU_CAGRA --uri http://...``).
Prints a table and writes JSON; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench scripts run from a checkout

from service.store import Filter, Item, VectorStore  # noqa: E402

DIM = 512
CATEGORIES = 10
DEFAULT_CONFIGS = ["server-HNSW", "server-IVF_FLAT", "lite-FLAT", "lite-HNSW"]


def mixture(n: int, centres: np.ndarray, rng: np.random.Generator, noise: float = 0.35) -> np.ndarray:
    """Points around random centres; ``noise`` is the per-vector norm of the offset before normalising."""
    picks = rng.integers(0, len(centres), n)
    out = np.empty((n, centres.shape[1]), np.float32)
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        offset = rng.standard_normal((stop - start, centres.shape[1])).astype(np.float32)
        offset *= noise / np.sqrt(centres.shape[1])
        chunk = centres[picks[start:stop]] + offset
        out[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def exact_top(data: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    scores = queries @ data.T
    if mask is not None:
        scores[:, ~mask] = -np.inf
    return np.argsort(-scores, axis=1)[:, :k]


def wait_indexed(store: VectorStore, kind: str, timeout_s: float = 3600) -> float:
    """Flush and wait until the vector index covers every row; returns the seconds waited."""
    client, name = store._connect(), store.collections[kind]  # bench-only peek at the live client
    started = time.perf_counter()
    client.flush(name)
    while time.perf_counter() - started < timeout_s:
        info = client.describe_index(name, "vector")
        if not info.get("pending_index_rows") and info.get("indexed_rows", 0) >= info.get("total_rows", 0):
            break
        time.sleep(1)
    return time.perf_counter() - started


def measure(store: VectorStore, queries: np.ndarray, flt: Filter | None, filters: list | None) -> tuple:
    hits_all, lat = [], []
    for i, q in enumerate(queries):
        f = Filter.model_validate(filters[i]) if filters is not None else flt
        t0 = time.perf_counter()
        [hits] = store.search("image", [q.tolist()], top_k=10, filter=f)
        lat.append(time.perf_counter() - t0)
        hits_all.append([int(h.id) for h in hits])
    return hits_all, np.array(lat)


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)]))


def run_config(
    config: str, data: np.ndarray, queries: np.ndarray, args: argparse.Namespace, workdir: Path
) -> dict:
    deployment, index_type = config.split("-", 1)
    uri = {"server": str(workdir / "server"), "lite": str(workdir / "lite.db"), "remote": args.uri}[
        deployment
    ]
    n = len(data)
    store = VectorStore(uri, model=f"bench {index_type} {n}", dim=DIM, index_type=index_type, timeout_s=60)
    store.ensure_collections()
    categories = np.arange(n) % CATEGORIES
    t0 = time.perf_counter()
    for start in range(0, n, 2000):
        stop = min(n, start + 2000)
        store.upsert(
            "image",
            [Item(str(i), data[i], metadata={"category": f"c{categories[i]}"}) for i in range(start, stop)],
        )
    insert_s = time.perf_counter() - t0
    index_s = wait_indexed(store, "image")
    store.search("image", [queries[0].tolist()], top_k=10)  # warm-up

    found, lat = measure(store, queries, None, None)
    wanted = [int(c) for c in np.random.default_rng(1).integers(0, CATEGORIES, len(queries))]
    filters = [[{"field": "category", "op": "eq", "value": f"c{c}"}] for c in wanted]
    found_f, lat_f = measure(store, queries, None, filters)
    truth = exact_top(data, queries, 10)
    truth_f = np.stack(
        [exact_top(data, queries[i : i + 1], 10, categories == c)[0] for i, c in enumerate(wanted)]
    )
    store.close()
    return {
        "config": config,
        "deployment": deployment,
        "index": index_type,
        "index_params": store.index.build_params,
        "search_params": store.index.search_params,
        "n": n,
        "dim": DIM,
        "insert_s": round(insert_s, 1),
        "index_wait_s": round(index_s, 1),
        "p50_ms": round(float(np.median(lat)) * 1e3, 2),
        "p95_ms": round(float(np.percentile(lat, 95)) * 1e3, 2),
        "qps": round(len(lat) / float(lat.sum()), 1),
        "recall_at_10": round(recall(found, truth), 4),
        "filtered_p50_ms": round(float(np.median(lat_f)) * 1e3, 2),
        "filtered_p95_ms": round(float(np.percentile(lat_f, 95)) * 1e3, 2),
        "filtered_qps": round(len(lat_f) / float(lat_f.sum()), 1),
        "filtered_recall_at_10": round(recall(found_f, truth_f), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument(
        "--configs", nargs="+", default=DEFAULT_CONFIGS, help="deployment-INDEX, e.g. server-HNSW"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=4000)
    parser.add_argument(
        "--uri", default="", help="a Milvus server for remote-* configs (GPU_CAGRA needs a GPU build)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "vector_search.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rows = []
    for n in args.sizes:
        data = mixture(n, centres, rng)
        queries = mixture(args.queries, centres, rng)
        for config in args.configs:
            with tempfile.TemporaryDirectory(prefix="tuwen-bench-") as tmp:
                row = run_config(config, data, queries, args, Path(tmp))
            rows.append(row)
            print(json.dumps(row), flush=True)

    header = f"{'config':<18}{'n':>9}{'p50 ms':>9}{'p95 ms':>9}{'QPS':>8}{'recall':>8}{'filt p50':>10}{'filt QPS':>10}{'filt rec':>10}"
    print(header)
    for r in rows:
        print(
            f"{r['config']:<18}{r['n']:>9}{r['p50_ms']:>9}{r['p95_ms']:>9}{r['qps']:>8}{r['recall_at_10']:>8}"
            f"{r['filtered_p50_ms']:>10}{r['filtered_qps']:>10}{r['filtered_recall_at_10']:>10}"
        )
    meta = {
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": __import__("os").cpu_count(),
        "clusters": args.clusters,
        "queries": args.queries,
        "command": " ".join(["bench/vector_search.py", *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
