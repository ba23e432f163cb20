"""Settings read from TUWEN_* variables fail fast, naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings


def test_environment_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUWEN_MILVUS_INDEX_PARAMS", '{"M": 32, "efConstruction": 100}')
    monkeypatch.setenv("TUWEN_CORS", "https://a.example, https://b.example")
    monkeypatch.setenv("TUWEN_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("TUWEN_DATA_DIR", "/srv/tuwen")
    settings = Settings()
    assert settings.milvus_index_params == {"M": 32, "efConstruction": 100}
    assert settings.cors == ["https://a.example", "https://b.example"]
    assert settings.log_level == "warning"
    assert settings.resolved_milvus_uri == str(Path("/srv/tuwen/milvus"))
    assert settings.resolved_thumbnail_dir == Path("/srv/tuwen/thumbnails")


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("TUWEN_MAX_TOP_K", "0", "max_top_k"),
        ("TUWEN_BACKEND", "cuda", "backend"),
        ("TUWEN_PORT", "70000", "port"),
        ("TUWEN_MILVUS_SEARCH_PARAMS", "{not json", "milvus_search_params"),
        ("TUWEN_API_KEYS", "just-a-key", "key:tenant"),
        ("TUWEN_MAX_QUEUE", "4", "TUWEN_MAX_QUEUE"),
    ],
)
def test_bad_values_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, complaint: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises((ValidationError, ValueError), match=complaint):
        Settings()


def test_a_missing_keys_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="TUWEN_API_KEYS_FILE"):
        Settings(api_keys_file=tmp_path / "absent")


def test_secrets_do_not_leak_into_reprs() -> None:
    settings = Settings(api_keys="s3cret:team", milvus_token="tok3n")
    assert "s3cret" not in repr(settings) and "tok3n" not in repr(settings)


def test_limits_the_store_would_refuse_later_are_refused_at_start() -> None:
    with pytest.raises(ValueError, match="TUWEN_MAX_TOP_K"):
        Settings(milvus_index_type="GPU_CAGRA", max_top_k=2000)
    assert Settings(milvus_index_type="GPU_CAGRA", max_top_k=1024).max_top_k == 1024
    with pytest.raises(ValueError, match="TUWEN_MAX_TEXT_CHARS"):
        Settings(max_text_chars=2049)
    assert Settings(max_text_chars=2048).max_text_chars == 2048
