"""API keys, body limit, input limits, rate limit and CORS on a real server, and /metrics counting
each refusal: 401 without a key, 413 on an oversized body, 422 naming the limit, 429 past the rate."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import RunningServer, UciCycles, assert_no_stack_trace, start_server, stop_server

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-fedcba9876543210"
RATE_PER_MINUTE = 30
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def secured(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(model_path, tmp_path_factory.mktemp("secured") / "server.log", wait_ready=False,
                          API_KEYS=f"{KEY_A}, {KEY_B}", RATE_LIMIT_PER_MINUTE=str(RATE_PER_MINUTE),
                          MAX_BODY_BYTES=str(MAX_BODY))
    try:
        with httpx.Client(base_url=server.base_url, timeout=60.0) as http:
            for _ in range(600):
                if http.get("/ready").status_code == 200:
                    break
                import time

                time.sleep(0.2)
        yield server
    finally:
        stop_server(server)


def _rejected(metrics: str, reason: str) -> float:
    prefix = f'hydrodiag_rejected_requests_total{{reason="{reason}"}} '
    return sum(float(line[len(prefix):]) for line in metrics.splitlines() if line.startswith(prefix))


def test_keys_limits_and_their_metrics(secured: RunningServer, uci: UciCycles) -> None:
    a = {"X-API-Key": KEY_A}
    with httpx.Client(base_url=secured.base_url, timeout=60.0) as http:
        # Probes stay open; everything else needs a key, in either header.
        for path in ("/health", "/ready", "/v2/health/live", "/v2/health/ready"):
            assert http.get(path).status_code == 200, path
        payload = uci.request("nominal", "sec-1")
        missing = http.post("/predict", json=payload)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "missing API key" in missing.json()["error"] and missing.headers["x-request-id"]
        wrong = http.get("/models", headers={"X-API-Key": "not-a-key-at-all-123"})
        assert wrong.status_code == 401 and "not-a-key" not in wrong.text
        assert http.get("/metrics").status_code == 401
        assert http.get("/openapi.json").status_code == 401
        assert http.post("/predict", json=payload, headers=a).status_code == 200
        assert http.post("/predict", json=payload, headers={"Authorization": f"Bearer {KEY_A}"}).status_code == 200

        # 413: declared too large (refused before reading), and streamed too large (chunked, no length).
        big = b'{"equipment_id": "e", "sensor_data": {"PS1": [' + b"1.0, " * 20_000 + b"1.0]}}"
        declared = http.post("/predict", content=big, headers={**a, "Content-Type": "application/json"})
        assert declared.status_code == 413 and "MAX_BODY_BYTES" in declared.json()["error"]

        def chunks() -> Iterator[bytes]:
            for offset in range(0, len(big), 8192):
                yield big[offset:offset + 8192]

        streamed = http.post("/predict", content=chunks(), headers={**a, "Content-Type": "application/json"})
        assert streamed.status_code == 413 and "MAX_BODY_BYTES" in streamed.json()["error"]

        # 422 naming the limit: sensors, series length, batch size.
        sensors = http.post("/predict", headers=a, json={
            "equipment_id": "e", "sensor_data": {f"pressure_pump_{i}": [1.0, 2.0] for i in range(33)}})
        assert sensors.status_code == 422 and "limit is 32" in sensors.json()["error"]
        assert "MAX_SENSORS" in sensors.json()["error"]
        series = http.post("/predict", headers=a, json={"equipment_id": "e",
                                                         "sensor_data": {"pressure_pump": [1.0] * 5001}})
        assert series.status_code == 422 and "limit is 5000" in series.json()["error"]
        batch = http.post("/predict/batch", headers=a, json={"requests": [
            {"equipment_id": "e", "sensor_data": {"pressure_pump": [1.0, 2.0]}}] * 17})
        assert batch.status_code == 422 and "limit is 16" in batch.json()["error"]
        for response in (missing, wrong, declared, streamed, sensors, series, batch):
            assert_no_stack_trace(response)

        # 429: key B exhausts its own budget (key A is not affected), with Retry-After.
        b = {"X-API-Key": KEY_B}
        statuses = [http.get("/v2", headers=b).status_code for _ in range(RATE_PER_MINUTE + 5)]
        # The bucket refills at RATE/60 per second, so a slow machine may squeeze in one or two more.
        assert RATE_PER_MINUTE <= statuses.count(200) <= RATE_PER_MINUTE + 2 and statuses[-1] == 429
        limited = http.get("/v2", headers=b)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert http.get("/stats", headers=a).status_code == 200

        metrics = http.get("/metrics", headers=a)
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        assert _rejected(text, "unauthorized") >= 4
        assert _rejected(text, "body_too_large") == 2
        assert _rejected(text, "invalid_input") >= 3
        assert _rejected(text, "rate_limited") >= 3
        assert 'hydrodiag_http_requests_total{method="POST",route="/predict",status="200"} 2.0' in text
        assert 'route="/predict",status="413"' in text
        for name in ("hydrodiag_http_request_duration_seconds_bucket", "hydrodiag_queue_depth",
                     "hydrodiag_batch_size_bucket", "hydrodiag_model_info", "hydrodiag_history_buffer_rows",
                     "hydrodiag_history_write_failures_total", "hydrodiag_history_rows_dropped_total"):
            assert name in text, name


def test_cors_preflight_needs_no_key(secured: RunningServer) -> None:
    with httpx.Client(base_url=secured.base_url, timeout=30.0) as http:
        preflight = http.options("/predict", headers={
            "Origin": "http://dashboard.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key,content-type"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://dashboard.example"
        assert "access-control-allow-credentials" not in preflight.headers
        refused = http.get("/models", headers={"Origin": "http://dashboard.example"})
        assert refused.status_code == 401  # CORS headers ride on refusals too, so browsers can read them
        assert refused.headers["access-control-allow-origin"] == "http://dashboard.example"


def test_invalid_content_length_is_400_not_500(secured: RunningServer) -> None:
    host, port = secured.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY_A}\r\n"
                     "Content-Length: -5\r\nConnection: close\r\n\r\n".encode())
        reply = sock.recv(4096)
    assert reply.split(b" ", 2)[1] in (b"400", b"413")  # the HTTP parser may refuse it first
