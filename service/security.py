"""API keys → tenants.

Keys come from settings (``TUWEN_API_KEYS`` / ``TUWEN_API_KEYS_FILE``). A presented key is compared
with every configured key in constant time (`hmac.compare_digest`, no early exit), so response time says
nothing about which key or how much of it matched. Without keys the API is open and everyone is the
``default`` tenant.
"""

from __future__ import annotations

import hmac

from service.store.schema import DEFAULT_TENANT, tenant_problem


class ApiKeys:
    def __init__(self, key_tenants: dict[str, str]) -> None:
        for tenant in key_tenants.values():
            if (problem := tenant_problem(tenant)) is not None:
                raise ValueError(f"TUWEN_API_KEYS: {problem}")
        self._entries = [(key.encode(), tenant) for key, tenant in key_tenants.items()]

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def tenant_for(self, presented: str | None) -> str | None:
        """The tenant of ``presented``; None when keys are required and it matches none."""
        if not self.enabled:
            return DEFAULT_TENANT
        if not presented:
            return None
        candidate = presented.encode()
        found: str | None = None
        for key, tenant in self._entries:  # look at every key: no early exit
            if hmac.compare_digest(candidate, key):
                found = tenant
        return found


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key from ``Authorization: Bearer <key>`` (what OpenAI clients send) or ``X-API-Key``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return x_api_key.strip() if x_api_key else None
