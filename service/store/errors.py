"""Errors of the vector store, each with a stable ``code`` the API maps to an HTTP status."""

from __future__ import annotations


class StoreError(Exception):
    """Base class; ``code`` is stable and machine-readable."""

    code = "store_error"


class StoreUnavailable(StoreError):
    """Milvus cannot be reached or did not answer in time (the API answers 503 with Retry-After)."""

    code = "store_unavailable"


class SchemaMismatch(StoreError):
    """An existing collection does not match this model (another dimension or layout); never reused."""

    code = "store_schema_mismatch"


class InvalidItem(StoreError, ValueError):
    """An item cannot be stored as given (too long an id, wrong vector size...)."""

    code = "invalid_item"
