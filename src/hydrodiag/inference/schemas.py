"""Request and response models of the inference core (the HTTP layer reuses them as they are).

Validation that needs no runtime configuration happens here: types, non-finite numbers, id
lengths, topology consistency. Limits that come from settings (series length, sensor count, batch
size) and everything that needs a topology are checked by the engine, which names the field the
same way (`requests[3].sensor_data.PS1`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator

from hydrodiag.taxonomy import HEALTH_STATUSES
from hydrodiag.topology.schema import Topology

# strict: a number is a JSON number, never a numeric string or a boolean that pydantic would coerce;
# allow_inf_nan=False also rejects NaN/Infinity that Python's JSON parser lets through.
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
SensorName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
HealthStatus = Literal[HEALTH_STATUSES]  # type: ignore[valid-type]
TrendStatus = Literal["degrading", "stable", "improving", "insufficient_history"]

_SENSOR_EXAMPLE: dict[str, Any] = {
    "pressure_pump_main": [100.0, 101.0, 102.0],
    "temperature_pump_main": [60.0, 61.0, 62.0],
    "vibration_pump_main": [2.5, 2.6, 2.7],
}


def _utc_now() -> datetime:
    return datetime.now(UTC)


class PredictionRequest(BaseModel):
    """One window of sensor readings of one machine."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"equipment_id": "exc_001", "sensor_data": _SENSOR_EXAMPLE}]},
    )

    equipment_id: str = Field(min_length=1, max_length=128, description="Machine the readings come from.")
    sensor_data: dict[SensorName, list[FiniteFloat]] = Field(
        description="Sensor name -> series (any length >= 2, resampled to the model's window). Names are "
        "declared by the topology or follow <quantity>_<component_id>.",
    )
    timestamp: datetime = Field(
        default_factory=_utc_now,
        description="End of the window (ISO 8601; UTC when no offset). Orders the health history.",
    )
    topology_id: str | None = Field(None, min_length=1, max_length=64, description="A registered topology.")
    topology: Topology | None = Field(None, description="An inline topology (instead of topology_id).")

    @field_validator("timestamp")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        # Naive timestamps are read as UTC so that history from different clients stays comparable.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @field_validator("topology")
    @classmethod
    def _one_topology(cls, value: Topology | None, info: ValidationInfo) -> Topology | None:
        # A field validator (not a model one) so that the error is located at `topology`.
        if value is not None and info.data.get("topology_id") is not None:
            raise ValueError("give either topology_id or an inline topology, not both")
        return value


class BatchPredictionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[PredictionRequest] = Field(min_length=1)


class HealthInfo(BaseModel):
    score: float = Field(description="System health in [0, 1]; 1 = nominal.")
    status: HealthStatus


class DegradationInfo(BaseModel):
    rate: float | None = Field(
        description="Health lost per hour (least-squares slope over this machine's recent history); "
        "null while the history is too short."
    )
    time_to_failure_hours: float | None = Field(
        description="Hours until health reaches the critical threshold at this rate; 0 when already "
        "below it; null when not degrading or the history is too short."
    )
    trend_status: TrendStatus
    points_used: int = Field(description="History points (this one included) the rate is fitted on.")
    span_hours: float = Field(description="Time covered by those points.")
    message: str | None = None


class AnomalyInfo(BaseModel):
    predictions: dict[str, float] = Field(description="Probability of each of the 9 anomaly types.")
    detected_anomalies: list[str] = Field(
        description="Types at or above the detection threshold, most likely first."
    )


class ComponentPrediction(BaseModel):
    id: str
    type: str
    health: float
    status: HealthStatus
    anomaly_predictions: dict[str, float]
    detected_anomalies: list[str]


class PredictionResponse(BaseModel):
    equipment_id: str
    health: HealthInfo
    degradation: DegradationInfo
    anomaly: AnomalyInfo
    components: list[ComponentPrediction]
    inference_time_ms: float
    model_version: str
    request_id: str | None = None
    topology_id: str
    timestamp: datetime


class BatchPredictionResponse(BaseModel):
    predictions: list[PredictionResponse]
    total_count: int
    total_time_ms: float
    request_id: str | None = None
