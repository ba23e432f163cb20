"""API keys → tenants: parsing and matching. The 401s and tenant isolation over HTTP are tested in
test_api_fast.py, and the stores' tenant isolation on Milvus in test_store.py and test_store_contract.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import Settings
from service.security import ApiKeys, presented_key


def test_keys_map_to_tenants_and_parse_from_env_and_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team keys\nfile-key:team-c\n")
    settings = Settings(api_keys="ka:team-a, kb:team-b", api_keys_file=keys_file)
    keys = ApiKeys(settings.api_key_tenants())
    assert keys.tenant_for("ka") == "team-a" and keys.tenant_for("file-key") == "team-c"
    assert keys.tenant_for("nope") is None and keys.tenant_for(None) is None
    assert ApiKeys({}).tenant_for(None) == "default"
    assert presented_key("Bearer abc", None) == "abc" and presented_key(None, "xyz") == "xyz"
    with pytest.raises(ValueError, match="key:tenant"):
        Settings(api_keys="no-tenant-here")
    with pytest.raises(ValueError, match="tenant"):
        ApiKeys({"k": "bad/tenant"})
