"""The HTTP path encodes the engine's plain response data itself (orjson) instead of validating a
response model first; these tests hold that encoding to what the model would have produced."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import pytest
from conftest import engine_settings

from hydrodiag.api.routes import json_response
from hydrodiag.inference import InferenceEngine, ModelManager, PredictionRequest
from hydrodiag.inference.schemas import PredictionResponse

UCI_SENSORS = ("PS1", "PS2", "PS3", "PS4", "PS5", "PS6", "EPS1", "FS1", "FS2", "TS1", "TS2", "TS3", "TS4",
               "VS1", "CE", "CP", "SE")
LEVELS = {"PS": 100.0, "EP": 2500.0, "FS": 8.0, "TS": 45.0, "VS": 0.6, "CE": 30.0, "CP": 1.8, "SE": 60.0}


def rig_readings(seed: int, drift: float = 0.0) -> dict[str, list[float]]:
    """60 values per UCI rig sensor around plausible levels (no dataset needed)."""
    rng = np.random.default_rng(seed)
    wave = np.sin(np.linspace(0.0, 6.0, 60))
    return {name: (LEVELS[name[:2]] * (1.0 - drift) * (1.0 + 0.05 * wave + 0.01 * rng.standard_normal(60))).tolist()
            for name in UCI_SENSORS}


@pytest.fixture
async def engine(model_path: Path, manager: ModelManager) -> AsyncIterator[InferenceEngine]:
    running = InferenceEngine(settings=engine_settings(model_path, trend_min_points=3), manager=manager)
    await running.start()
    yield running
    await running.close()


def assert_encodes_as_model(data: dict[str, object]) -> PredictionResponse:
    model = PredictionResponse.model_validate(data)
    assert json_response(data).body == model.model_dump_json().encode()
    return model


async def test_response_data_encodes_exactly_as_the_response_model(engine: InferenceEngine) -> None:
    start = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    statuses = set()
    for i in range(8):
        request = PredictionRequest(equipment_id="rig-bytes", topology_id="uci_test_rig",
                                    sensor_data=rig_readings(i, drift=0.02 * i), timestamp=start + timedelta(hours=i))
        model = assert_encodes_as_model(await engine.predict_data(request, request_id=f"req-{i}"))
        statuses.add(model.degradation.trend_status)
        assert model.timestamp == start + timedelta(hours=i) and model.request_id == f"req-{i}"
    # The trend goes from too little history to a fitted rate: both shapes of `degradation` are covered.
    assert "insufficient_history" in statuses and len(statuses) >= 2


@pytest.mark.parametrize("timestamp", [
    datetime(2026, 12, 1, 8, 0, 0, 123456),  # naive: kept without an offset, as the model does
    datetime(2026, 12, 1, 8, 0, tzinfo=timezone(timedelta(hours=2))),
])
async def test_timestamps_and_missing_request_id_encode_as_the_model(engine: InferenceEngine,
                                                                      timestamp: datetime) -> None:
    request = PredictionRequest(equipment_id="rig-time", topology_id="uci_test_rig", sensor_data=rig_readings(1),
                                timestamp=timestamp)
    data = await engine.predict_data(request)
    model = assert_encodes_as_model(data)
    assert model.request_id is None and orjson.loads(json_response(data).body)["timestamp"] == \
        model.model_dump(mode="json")["timestamp"]


async def test_predict_returns_the_validated_form_of_the_same_data(engine: InferenceEngine) -> None:
    request = PredictionRequest(equipment_id="rig-same", topology_id="uci_test_rig", sensor_data=rig_readings(2))
    first = await engine.predict(request, request_id="a")
    second = PredictionResponse.model_validate(await engine.predict_data(request, request_id="a"))
    assert first.model_dump(exclude={"inference_time_ms", "degradation"}) == \
        second.model_dump(exclude={"inference_time_ms", "degradation"})
