"""All configuration, read once from the environment (and an optional `.env` file).

Every knob of the service lives here; nothing else reads `os.environ`. Invalid values fail at
start with a message naming the variable (see `load_settings`).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hydrodiag.taxonomy import DEFAULT_ANOMALY_THRESHOLD, DEFAULT_STATUS_THRESHOLDS

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent.parent
DEFAULT_MODEL_PATH = REPO_ROOT / "models" / "default.ckpt"
DEFAULT_DATA_DIR = REPO_ROOT / "data"
SQLITE_FILE_NAME = "hydrodiag.db"
# TORCH_THREADS=0 gives the forward pass one thread on machines with at most this many CPUs.
SMALL_MACHINE_CPUS = 2
# Schemes DATABASE_URL may use; plain PostgreSQL URLs are rewritten to the psycopg 3 driver.
_POSTGRES_PREFIXES = ("postgresql://", "postgres://", "postgresql+psycopg2://")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", protected_namespaces=())

    # Model
    model_path: Path = Field(DEFAULT_MODEL_PATH, description="Checkpoint served at start.")
    model_dir: Path | None = Field(None, description="Versions listed by GET /models; default: MODEL_PATH's folder.")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$",
                        description="auto (the first CUDA device when there is one), cpu, cuda or cuda:<index>.")
    use_compile: bool = False
    compile_mode: str = "reduce-overhead"
    jit_trace: bool = Field(True, description="Run the forward pass as a TorchScript trace, made and checked against "
                            "the eager model at load: it releases the GIL for the whole pass (USE_COMPILE wins).")
    model_cache_size: int = Field(2, ge=1, description="Models kept in the ModelManager's LRU cache.")
    torch_threads: int = Field(
        0, ge=0, description="Intra-op threads for the forward pass; 0 = automatic (see resolved_torch_threads)."
    )
    gil_switch_interval_ms: float = Field(
        0.05, gt=0.0, le=100.0, description="sys.setswitchinterval for the server: how long the event loop may keep "
        "the GIL from the forward thread that waits for it at the start and end of every pass (Python's default 5).")

    # Batching
    batch_size: int = Field(32, ge=1, le=4096)
    pipeline_min_batch: int = Field(
        8, ge=0, le=4096, description="A queue longer than this is split: the next pass takes half of it, at least "
        "this many, so answers flow while the model runs the rest; 0 = every pass takes up to BATCH_SIZE. Ignored "
        "with MAX_WAIT_MS > 0.")
    max_queue_size: int = Field(256, ge=1)
    max_wait_ms: float = Field(0.0, ge=0.0, le=10_000.0)
    use_dynamic_batching: bool = True
    pin_memory: bool = True

    # API
    api_host: str = "0.0.0.0"
    api_port: int = Field(8002, ge=1, le=65535)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_allow_credentials: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    access_log: bool = Field(False, description="uvicorn's line per request (always on with LOG_LEVEL=DEBUG).")
    fastapi_telemetry: bool = Field(False, description="FastAPI's native OpenTelemetry spans, metrics and logs, for a "
                                    "process with an OpenTelemetry SDK configured; off, requests skip its per-request "
                                    "provider lookups (Prometheus /metrics is independent of it).")
    malloc_keep_mb: int = Field(128, ge=0, le=2047, description="glibc only: freed heap memory kept for the next "
                                "forward pass instead of returned to the kernel and faulted in again, and blocks up to "
                                "32 MB served from the heap (hydrodiag.malloc); 0 = glibc's own dynamic thresholds.")
    gc_freeze: bool = Field(True, description="Exclude what is alive once the model is loaded from the garbage "
                            "collector's passes (gc.freeze): removes ~100 ms p99 stalls under load.")
    gc_gen2_threshold: int = Field(1000, ge=1, le=1_000_000, description="Middle-generation collections between "
                                   "full ones (gc.set_threshold's third value; Python's default is 10).")
    workers: int = Field(1, ge=1, le=64, description="Server processes sharing the port (SO_REUSEPORT), each with its "
                         "own event loop and model; registrations and activations reach every one.")
    peer_sync_timeout_s: float = Field(30.0, gt=0, le=600, description="WORKERS > 1: how long a registration or "
                                       "activation waits for the other workers to apply it before answering 503.")
    shutdown_timeout_s: float = Field(30.0, gt=0, le=3600,
                                      description="SIGTERM: one budget for in-flight work and the history flush.")

    # Security
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, repr=False)
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    rate_limit_per_minute: int = Field(0, ge=0, description="Requests per minute per API key (or client); 0 = off.")

    # History store
    database_url: str | None = Field(None, repr=False)
    data_dir: Path = DEFAULT_DATA_DIR
    history_buffer_size: int = Field(10_000, ge=1, description="Rows waiting for the database before overflow.")
    history_write_batch: int = Field(500, ge=1, le=100_000)
    history_flush_interval_ms: float = Field(100.0, ge=1.0, le=60_000.0)
    history_retry_max_s: float = Field(5.0, gt=0, le=600.0)

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

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _long_enough(cls, value: list[str]) -> list[str]:
        # A short key can be guessed; the message never repeats the key itself.
        if any(len(key) < 16 for key in value):
            raise ValueError("every key must be at least 16 characters long")
        return value

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        url = value.strip()
        for prefix in _POSTGRES_PREFIXES:
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        if url.startswith(("postgresql+psycopg://", "sqlite://")):
            return url
        raise ValueError("must start with postgresql://, postgresql+psycopg:// or sqlite://")

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
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError("CORS_ALLOW_CREDENTIALS=true cannot be combined with CORS_ORIGINS='*'")
        return self

    @property
    def resolved_database_url(self) -> str:
        """DATABASE_URL, or the SQLite file under DATA_DIR when it is unset."""
        return self.database_url or f"sqlite:///{(self.data_dir / SQLITE_FILE_NAME).resolve()}"

    @property
    def access_log_enabled(self) -> bool:
        """A log line per request costs a few per cent of a busy core: off unless asked for or debugging."""
        return self.access_log or self.log_level == "DEBUG"

    @property
    def resolved_torch_threads(self) -> int | None:
        """Threads for `torch.set_num_threads`, or None to leave torch's default.

        TORCH_THREADS=0 (automatic): on a machine with at most 2 CPUs the forward pass gets 1 thread,
        because the event loop needs the other core and a second intra-op thread only contends with it;
        on larger machines torch's own default stands. With several workers, each gets its share of the
        CPUs less one for its event loop (at least 1), so that the processes do not oversubscribe them.
        """
        if self.torch_threads:
            return self.torch_threads
        cpus = os.cpu_count() or 1
        if self.workers > 1:
            return max(1, cpus // self.workers - 1)
        return 1 if cpus <= SMALL_MACHINE_CPUS else None

    @property
    def resolved_model_dir(self) -> Path:
        return self.model_dir if self.model_dir is not None else self.model_path.parent

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
