"""The real model behind the real server, over real HTTP: predictions, service endpoints, batching."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from conftest import RunningServer, UciCycles, post_simultaneously

from hydrodiag.taxonomy import ANOMALY_TYPES, DEFAULT_STATUS_THRESHOLDS, HEALTH_STATUSES


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _check_prediction(body: dict, equipment_id: str) -> None:
    assert body["equipment_id"] == equipment_id
    assert 0.0 <= body["health"]["score"] <= 1.0
    assert body["health"]["status"] in HEALTH_STATUSES
    assert set(body["anomaly"]["predictions"]) == set(ANOMALY_TYPES)
    assert all(0.0 <= p <= 1.0 for p in body["anomaly"]["predictions"].values())
    assert set(body["anomaly"]["detected_anomalies"]) <= set(ANOMALY_TYPES)
    assert set(body["degradation"]) >= {"rate", "time_to_failure_hours", "trend_status", "points_used"}
    assert body["inference_time_ms"] > 0
    assert body["model_version"]
    assert body["request_id"]
    for component in body["components"]:
        assert set(component) == {"id", "type", "health", "status", "anomaly_predictions",
                                  "detected_anomalies"}
        assert 0.0 <= component["health"] <= 1.0
        assert set(component["anomaly_predictions"]) == set(ANOMALY_TYPES)


def test_service_endpoints(client: httpx.Client) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "healthy" and health.json()["model_loaded"] is True
    assert health.json()["version"]
    assert client.get("/ready").json()["ready"] is True
    stats = client.get("/stats").json()
    for key in ("model_path", "device", "batch_size", "model_device", "model_parameters", "queue_size",
                "processing", "requests", "batches", "mean_batch_size", "latency_ms", "model_version"):
        assert key in stats, key
    assert stats["model_device"] == "cpu" and stats["model_parameters"] > 0
    for page in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(page).status_code == 200, page


def test_topologies(client: httpx.Client) -> None:
    listing = client.get("/topologies").json()
    assert "uci_test_rig" in {t["id"] for t in listing}
    rig = client.get("/topologies/uci_test_rig").json()
    assert {"cooler", "valve", "pump", "accumulator"} <= {c["id"] for c in rig["components"]}
    assert len(rig["sensors"]) == 17
    missing = client.get("/topologies/no_such_rig")
    assert missing.status_code == 404
    assert "no_such_rig" in missing.json()["error"]


def test_single_prediction_on_a_real_cycle(client: httpx.Client, uci: UciCycles) -> None:
    equipment = _unique("rig")
    response = client.post("/predict", json=uci.request("nominal", equipment))
    assert response.status_code == 200, response.text
    body = response.json()
    _check_prediction(body, equipment)
    assert body["topology_id"] == "uci_test_rig"
    assert {c["id"] for c in body["components"]} >= {"cooler", "valve", "pump", "accumulator"}
    assert body["degradation"]["rate"] is None
    assert body["degradation"]["message"] == "insufficient history: 1 of 3 points"


def test_failing_cooler_is_the_least_healthy_component(client: httpx.Client, uci: UciCycles) -> None:
    body = client.post("/predict", json=uci.request("cooler_failing", _unique("rig"))).json()
    worst = min(body["components"], key=lambda c: c["health"])
    assert worst["id"] == "cooler", [(c["id"], c["health"]) for c in body["components"]]


def test_batch_prediction_keeps_order(client: httpx.Client, uci: UciCycles) -> None:
    labels = ["nominal", "cooler_failing", "cooler_reduced"]
    ids = [_unique(label) for label in labels]
    payload = {"requests": [uci.request(label, eid) for label, eid in zip(labels, ids, strict=True)]}
    response = client.post("/predict/batch", json=payload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total_count"] == 3 and body["total_time_ms"] > 0
    assert [p["equipment_id"] for p in body["predictions"]] == ids
    for prediction, eid in zip(body["predictions"], ids, strict=True):
        _check_prediction(prediction, eid)
    # The batch answers exactly as single requests would (same model, same graphs).
    single = client.post("/predict", json=uci.request("cooler_failing", _unique("x"))).json()
    assert single["health"]["score"] == pytest.approx(body["predictions"][1]["health"]["score"], abs=1e-4)


def test_request_id_is_echoed_or_generated(client: httpx.Client, uci: UciCycles) -> None:
    payload = uci.request("nominal", _unique("rid"))
    given = client.post("/predict", json=payload, headers={"X-Request-ID": "abc-42"})
    assert given.headers["x-request-id"] == "abc-42" and given.json()["request_id"] == "abc-42"
    generated = client.get("/health")
    assert uuid.UUID(generated.headers["x-request-id"])
    unsafe = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert uuid.UUID(unsafe.headers["x-request-id"])


def test_json_fast_path_answers_like_fastapi(client: httpx.Client, uci: UciCycles) -> None:
    """Bodies FastAPI reads as JSON take pydantic-core's parser; any other content type still gets
    FastAPI's own handling (a 422 naming the body), and both paths give the same prediction."""
    equipment = _unique("ct")
    raw = orjson.dumps(uci.request("nominal", equipment))
    answers = [client.post("/predict", content=raw, headers={"content-type": ct})
               for ct in ("application/json", "application/json; charset=utf-8", "application/vnd.x+json")]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all(a.headers["content-type"] == "application/json" for a in answers)
    assert len({orjson.dumps(a.json()["anomaly"]) for a in answers}) == 1
    refused = client.post("/predict", content=raw, headers={"content-type": "text/plain"})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body"]
    broken = client.post("/predict", content=raw[:-5], headers={"content-type": "application/json"})
    assert broken.status_code == 422 and broken.json()["detail"][0]["type"] == "json_invalid"


def test_cors_allows_only_the_configured_origin(client: httpx.Client) -> None:
    allowed = client.get("/health", headers={"Origin": "http://dashboard.example"})
    assert allowed.headers["access-control-allow-origin"] == "http://dashboard.example"
    assert "access-control-allow-credentials" not in allowed.headers
    other = client.get("/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_topology_inferred_from_sensor_names(client: httpx.Client) -> None:
    payload = {
        "equipment_id": _unique("exc"),
        "sensor_data": {
            "pressure_pump_main": [100.0, 101.0, 102.0, 101.5],
            "temperature_pump_main": [60.0, 61.0, 62.0, 62.5],
            "vibration_pump_main": [2.5, 2.6, 2.7, 2.6],
            "pressure_valve_boom": [90.0, 95.0, 93.0, 91.0],
            "position_cylinder_boom": [10.0, 50.0, 120.0, 300.0],
        },
    }
    response = client.post("/predict", json=payload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["topology_id"] == "inferred"
    assert {(c["id"], c["type"]) for c in body["components"]} == {
        ("pump_main", "pump"), ("valve_boom", "valve"), ("cylinder_boom", "cylinder")}


def test_inline_topology(client: httpx.Client) -> None:
    topology = {
        "id": "mini_press",
        "components": [{"id": "p1", "type": "pump"}, {"id": "v1", "type": "valve"},
                       {"id": "c1", "type": "cylinder"}],
        "edges": [{"source": "p1", "target": "v1", "length_m": 2.0, "diameter_mm": 16},
                  {"source": "v1", "target": "c1"}],
        "sensors": [{"name": "P_out", "component": "p1", "quantity": "pressure"},
                    {"name": "stroke", "component": "c1", "quantity": "position"}],
    }
    payload = {
        "equipment_id": _unique("press"),
        "topology": topology,
        "sensor_data": {"P_out": [180.0, 182.0, 181.0], "stroke": [0.0, 100.0, 200.0],
                        "temperature_v1": [45.0, 45.5, 46.0]},  # undeclared, named after a component
    }
    response = client.post("/predict", json=payload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["topology_id"] == "mini_press"
    assert [c["id"] for c in body["components"]] == ["p1", "v1", "c1"]


def test_topology_declared_baselines_are_read_and_validated(client: httpx.Client) -> None:
    def topology(baseline: dict[str, float] | None) -> dict[str, object]:
        sensor = {"name": "P_out", "component": "p1", "quantity": "pressure"}
        return {"id": "mini_press_b", "components": [{"id": "p1", "type": "pump"}, {"id": "v1", "type": "valve"}],
                "edges": [{"source": "p1", "target": "v1"}],
                "sensors": [sensor if baseline is None else {**sensor, "baseline": baseline}]}

    def predict(baseline: dict[str, float] | None) -> httpx.Response:
        return client.post("/predict", json={"equipment_id": _unique("press"), "topology": topology(baseline),
                                              "sensor_data": {"P_out": [180.0, 182.0, 181.0, 183.0]}})

    without, commissioned = predict(None), predict({"mean": 120.0, "std": 5.0})
    assert without.status_code == commissioned.status_code == 200, commissioned.text
    # 180 bar is 12 standard deviations above this machine's normal: the model must see a difference.
    assert without.json()["components"] != commissioned.json()["components"]
    invalid = predict({"mean": 120.0, "std": 0.0})
    assert invalid.status_code == 422
    assert "baseline" in invalid.text and "Traceback" not in invalid.text


def test_degradation_trend_from_history(client: httpx.Client, uci: UciCycles) -> None:
    equipment = _unique("trend")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    labels = ["nominal", "nominal", "cooler_reduced", "cooler_failing"]
    bodies = []
    for step, label in enumerate(labels):
        timestamp = (start + timedelta(hours=2 * step)).isoformat()
        response = client.post("/predict", json=uci.request(label, equipment, timestamp=timestamp))
        assert response.status_code == 200, response.text
        bodies.append(response.json())
    first, second = bodies[0]["degradation"], bodies[1]["degradation"]
    assert first["rate"] is None and first["time_to_failure_hours"] is None
    assert first["trend_status"] == "insufficient_history"
    assert first["message"] == "insufficient history: 1 of 3 points"
    assert second["message"] == "insufficient history: 2 of 3 points"
    for points, body in ((3, bodies[2]), (4, bodies[3])):
        trend = body["degradation"]
        assert isinstance(trend["rate"], float)
        assert trend["points_used"] == points
        assert trend["span_hours"] == pytest.approx(2.0 * (points - 1))
        critical = DEFAULT_STATUS_THRESHOLDS["warning"]
        if trend["trend_status"] == "degrading":
            assert trend["rate"] > 0
            expected = max(0.0, (body["health"]["score"] - critical) / trend["rate"])
            assert trend["time_to_failure_hours"] == pytest.approx(expected, rel=1e-3, abs=1e-3)
        else:
            assert trend["trend_status"] in ("stable", "improving")
            assert trend["time_to_failure_hours"] is None


async def test_concurrent_requests_share_forward_passes(
    client: httpx.Client, server: RunningServer, uci: UciCycles
) -> None:
    bodies = [orjson.dumps(uci.request("nominal", f"conc-{i}")) for i in range(64)]
    before = client.get("/stats").json()
    answers = await post_simultaneously(server.base_url, "/predict", bodies)
    after = client.get("/stats").json()
    failures = [body for status, body in answers if status != 200]
    assert not failures, failures
    assert [body["equipment_id"] for _, body in answers] == [f"conc-{i}" for i in range(64)]
    served = after["requests"] - before["requests"]
    passes = after["batches"] - before["batches"]
    assert served == 64
    assert passes <= 16, f"64 simultaneous requests took {passes} forward passes"
    assert after["max_batch_size_seen"] > 1
