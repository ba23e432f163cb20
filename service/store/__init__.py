"""Tuwen's vector store: Milvus collections per model and kind, structured filters, tenants."""

from service.store.errors import InvalidItem, SchemaMismatch, StoreError, StoreUnavailable
from service.store.filters import AnyOf, Condition, Filter, compile_filter
from service.store.milvus import Hit, Item, VectorStore, deployment_of
from service.store.schema import DEFAULT_TENANT

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
