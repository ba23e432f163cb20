"""API keys → tenants: constant-time matching, 401s, and tenant isolation over real HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from service.config import Settings
from service.security import ApiKeys, presented_key
from tests.service.api_server import client, serve, settings_for, tiny_bundle


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


@pytest.mark.slow
def test_a_tenant_never_sees_another_tenants_items_and_bad_keys_get_401(tmp_path: Path) -> None:
    bundle = tiny_bundle()
    with serve(settings_for(bundle, tmp_path / "data", api_keys="key-a:tenant-a,key-b:tenant-b")) as base:
        for key in (None, "wrong"):
            with client(base, key) as http:
                r = http.post("/search", json={"text": "猫"})
                assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        assert httpx.get(f"{base}/healthz").status_code == 200
        with client(base, "key-a") as a, client(base, "key-b") as b:
            assert a.post("/items", json={"items": [{"id": "same", "text": "甲的猫"}]}).status_code == 200
            assert b.post("/items", json={"items": [{"id": "same", "text": "乙的狗"}]}).status_code == 200
            assert a.get("/items/text/same").json()["text"] == "甲的猫"
            assert b.get("/items/text/same").json()["text"] == "乙的狗"
            hits = b.post("/search", json={"text": "甲的猫", "target": "text", "top_k": 10}).json()["results"]
            assert [h["text"] for h in hits] == ["乙的狗"]
            assert a.delete("/items/text/same").status_code == 200
            assert b.get("/items/text/same").status_code == 200
