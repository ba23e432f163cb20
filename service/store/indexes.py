"""The vector index for each deployment, with every build and search parameter overridable.

Defaults (measured at 100k × 512 with ``bench/vector_search.py``): FLAT on Milvus Lite (3.x scans every
row whatever the index, and its HNSW build takes a minute for nothing), HNSW on a Milvus server (the local
embedded one or a remote one), GPU_CAGRA when asked for on a Milvus GPU build (``limit`` ≤ 1024 and
``itopk_size`` ≥ ``limit``, enforced here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Deployment = Literal["lite", "local", "remote"]
METRIC = "IP"  # vectors are L2-normalised; GPU indexes accept IP and L2, not COSINE
MILVUS_MAX_TOP_K = 16_384

DEFAULT_INDEX: dict[str, str] = {"lite": "FLAT", "local": "HNSW", "remote": "HNSW"}
DEFAULT_BUILD_PARAMS: dict[str, dict[str, Any]] = {
    "FLAT": {},
    "HNSW": {"M": 16, "efConstruction": 200},
    "IVF_FLAT": {"nlist": 1024},
    "GPU_CAGRA": {"intermediate_graph_degree": 64, "graph_degree": 32, "build_algo": "IVF_PQ"},
}
DEFAULT_SEARCH_PARAMS: dict[str, dict[str, Any]] = {
    "FLAT": {},
    "HNSW": {"ef": 64},
    "IVF_FLAT": {"nprobe": 16},
    "GPU_CAGRA": {"itopk_size": 128, "search_width": 4},
}
MAX_TOP_K: dict[str, int] = {"GPU_CAGRA": 1024}


@dataclass(frozen=True)
class IndexSpec:
    index_type: str
    build_params: dict[str, Any] = field(default_factory=dict)
    search_params: dict[str, Any] = field(default_factory=dict)
    metric_type: str = METRIC

    @property
    def max_top_k(self) -> int:
        return MAX_TOP_K.get(self.index_type, MILVUS_MAX_TOP_K)

    def search_params_for(self, top_k: int) -> dict[str, Any]:
        """Search params for one query size: the graph indexes must look at least ``top_k`` candidates."""
        params = dict(self.search_params)
        if self.index_type == "HNSW":
            params["ef"] = max(int(params.get("ef", 0)), top_k)
        elif self.index_type == "GPU_CAGRA":
            itopk = max(int(params.get("itopk_size", 0)), top_k)
            params["itopk_size"] = 1 << (itopk - 1).bit_length()  # CAGRA wants a power of two
        return {"metric_type": self.metric_type, "params": params}


def choose_index(
    deployment: Deployment,
    index_type: str | None = None,
    build_params: dict[str, Any] | None = None,
    search_params: dict[str, Any] | None = None,
) -> IndexSpec:
    """The deployment's default index unless ``index_type`` is given; given params override defaults."""
    kind = (index_type or DEFAULT_INDEX[deployment]).upper()
    return IndexSpec(
        index_type=kind,
        build_params=DEFAULT_BUILD_PARAMS.get(kind, {}) | (build_params or {}),
        search_params=DEFAULT_SEARCH_PARAMS.get(kind, {}) | (search_params or {}),
    )
