"""All configuration, read once from the environment (and an optional `.env` file).

Every knob of the service lives here; nothing else reads `os.environ`. Invalid values fail at
start with a message naming the variable (see `load_settings`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hydrodiag.taxonomy import DEFAULT_ANOMALY_THRESHOLD, DEFAULT_STATUS_THRESHOLDS

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent.parent
DEFAULT_MODEL_PATH = REPO_ROOT / "models" / "default.ckpt"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", protected_namespaces=())

    # Model
    model_path: Path = Field(DEFAULT_MODEL_PATH, description="Checkpoint served at start.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    use_compile: bool = False
    compile_mode: str = "reduce-overhead"
    model_cache_size: int = Field(2, ge=1, description="Models kept in the ModelManager's LRU cache.")
    torch_threads: int = Field(0, ge=0, description="Intra-op threads for the forward pass; 0 = automatic.")

    # Batching
    batch_size: int = Field(32, ge=1, le=4096)
    max_queue_size: int = Field(256, ge=1)
    max_wait_ms: float = Field(2.0, ge=0.0, le=10_000.0)
    use_dynamic_batching: bool = True
    pin_memory: bool = True

    # API
    api_host: str = "0.0.0.0"
    api_port: int = Field(8002, ge=1, le=65535)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    # Input limits
    max_series_length: int = Field(100_000, ge=2)
    max_sensors: int = Field(256, ge=1)
    max_batch_items: int = Field(256, ge=1)

    # Diagnosis
    status_threshold_healthy: float = Field(DEFAULT_STATUS_THRESHOLDS["healthy"], gt=0, lt=1)
    status_threshold_degraded: float = Field(DEFAULT_STATUS_THRESHOLDS["degraded"], gt=0, lt=1)
    status_threshold_warning: float = Field(DEFAULT_STATUS_THRESHOLDS["warning"], gt=0, lt=1)
    anomaly_threshold: float = Field(DEFAULT_ANOMALY_THRESHOLD, gt=0, lt=1)
    history_max_points: int = Field(256, ge=2, description="Health points kept per equipment.")
    history_max_equipment: int = Field(10_000, ge=1)
    trend_min_points: int = Field(3, ge=2)
    trend_min_span_hours: float = Field(0.01, ge=0)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> Settings:
        if not (self.status_threshold_healthy > self.status_threshold_degraded > self.status_threshold_warning):
            raise ValueError(
                "STATUS_THRESHOLD_HEALTHY > STATUS_THRESHOLD_DEGRADED > STATUS_THRESHOLD_WARNING must hold"
            )
        return self

    @property
    def status_thresholds(self) -> dict[str, float]:
        return {
            "healthy": self.status_threshold_healthy,
            "degraded": self.status_threshold_degraded,
            "warning": self.status_threshold_warning,
        }


class SettingsError(Exception):
    """Configuration from the environment is invalid; the message names each variable."""


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's error into one readable line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "_".join(str(part) for part in err["loc"]).upper() or "settings"
            lines.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
