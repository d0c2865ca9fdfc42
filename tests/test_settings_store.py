"""Configuration of the production features: DATABASE_URL normalisation, keys, CORS and limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydrodiag.settings import SettingsError, load_settings
from hydrodiag.store.sql import safe_url


def test_database_url_is_normalised_to_psycopg3(tmp_path: Path) -> None:
    for given in ("postgresql://u:secret@db:5432/h", "postgres://u:secret@db:5432/h",
                  "postgresql+psycopg://u:secret@db:5432/h"):
        assert load_settings(database_url=given).database_url == "postgresql+psycopg://u:secret@db:5432/h"
    default = load_settings(data_dir=tmp_path)
    assert default.database_url is None
    assert default.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'hydrodiag.db'}"
    assert "secret" not in safe_url("postgresql+psycopg://u:secret@db:5432/h")
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        load_settings(database_url="mysql://u@db/h")


def test_keys_cors_and_limits_are_validated() -> None:
    settings = load_settings(api_keys=" first-key-0123456789 ,second-key-0123456789,")
    assert settings.api_keys == ["first-key-0123456789", "second-key-0123456789"]
    assert "first-key" not in repr(settings)
    with pytest.raises(SettingsError, match="API_KEYS") as short:
        load_settings(api_keys="short")
    assert "short" not in str(short.value)  # a rejected key is never echoed
    with pytest.raises(SettingsError, match="CORS_ALLOW_CREDENTIALS"):
        load_settings(cors_origins="*", cors_allow_credentials=True)
    assert load_settings(cors_origins="https://a.example", cors_allow_credentials=True).cors_allow_credentials
    with pytest.raises(SettingsError, match="MAX_BODY_BYTES"):
        load_settings(max_body_bytes=10)
    with pytest.raises(SettingsError, match="RATE_LIMIT_PER_MINUTE"):
        load_settings(rate_limit_per_minute=-1)
    assert load_settings(model_path=Path("/m/x.ckpt")).resolved_model_dir == Path("/m")
    assert load_settings(device="cuda:1").device == "cuda:1"  # a host with several GPUs picks one
    with pytest.raises(SettingsError, match="DEVICE"):
        load_settings(device="gpu")


def test_readme_documents_every_environment_variable() -> None:
    from hydrodiag.settings import REPO_ROOT, Settings

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Configuration"):]
    missing = []
    for name in Settings.model_fields:
        variable = name.upper()
        # Rows may share a prefix: `STATUS_THRESHOLD_HEALTHY`, `_DEGRADED`, `_WARNING`.
        if f"`{variable}`" not in table and f"`_{variable.rsplit('_', 1)[-1]}`" not in table:
            missing.append(variable)
    assert not missing, f"README.md's configuration table lacks {missing}"


def test_torch_threads_auto_and_access_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert load_settings().resolved_torch_threads == 1  # 0 = auto: the event loop keeps the other core
    assert load_settings(torch_threads=3).resolved_torch_threads == 3
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert load_settings().resolved_torch_threads is None  # torch's own default on larger machines
    assert not load_settings().access_log_enabled
    assert load_settings(access_log=True).access_log_enabled
    assert load_settings(log_level="debug").access_log_enabled
