"""Tuwen's vector store: Milvus collections per model and kind, structured filters, tenants.

The Milvus-backed names are imported on first use (PEP 562): Settings and the CLI import this package for
its limits, and should not pay pymilvus's ~0.4 s import (nor should every Ray worker of `tuwen index`).
"""

from typing import TYPE_CHECKING, Any

from service.store.errors import InvalidItem, SchemaMismatch, StoreError, StoreUnavailable
from service.store.filters import AnyOf, Condition, Filter, compile_filter
from service.store.schema import DEFAULT_TENANT

if TYPE_CHECKING:
    from service.store.milvus import Hit, Item, VectorStore, deployment_of

_FROM_MILVUS = frozenset({"Hit", "Item", "VectorStore", "deployment_of"})


def __getattr__(name: str) -> Any:
    if name in _FROM_MILVUS:
        from service.store import milvus

        return getattr(milvus, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_TENANT",
    "AnyOf",
    "Condition",
    "Filter",
    "Hit",
    "InvalidItem",
    "Item",
    "SchemaMismatch",
    "StoreError",
    "StoreUnavailable",
    "VectorStore",
    "compile_filter",
    "deployment_of",
]
