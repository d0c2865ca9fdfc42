"""`POST /predict` through the fast lane answers exactly as the FastAPI route would, and hands the
app every request it does not answer itself; an unexpected engine error is still a generic 500."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import UciCycles, assert_no_stack_trace, engine_settings
from fastapi import FastAPI
from starlette.types import Message

from hydrodiag.api.app import create_app
from hydrodiag.api.fast_lane import PredictFastLane
from hydrodiag.api.routes import PREDICT_PATH
from hydrodiag.inference.engine import InferenceEngine
from hydrodiag.inference.manager import ModelManager


def _app(model_path: Path, manager: ModelManager, *, lane: bool, route: bool) -> FastAPI:
    engine = InferenceEngine(settings=engine_settings(model_path), manager=manager)
    engine.load()
    app = create_app(engine.settings, engine)
    if not lane:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not PredictFastLane]
    if not route:  # what still answers /predict is the lane
        app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != PREDICT_PATH]
    return app


async def _post(app: FastAPI, content: bytes, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        return await http.post("/predict", content=content,
                               headers={"content-type": "application/json", **headers})


def _without_timing(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body.pop("inference_time_ms") > 0
    return body


async def test_the_lane_answers_as_the_route_does(model_path: Path, manager: ModelManager, uci: UciCycles) -> None:
    payload = orjson.dumps(uci.request("cooler_failing", "lane-1", timestamp="2026-12-07T10:00:00+01:00"))
    lane = await _post(_app(model_path, manager, lane=True, route=False), payload, **{"X-Request-ID": "r-1"})
    route = await _post(_app(model_path, manager, lane=False, route=True), payload, **{"X-Request-ID": "r-1"})
    assert lane.status_code == route.status_code == 200, lane.text
    assert _without_timing(lane) == _without_timing(route)
    assert lane.json()["timestamp"] == "2026-12-07T09:00:00Z" and lane.json()["request_id"] == "r-1"
    for header in ("content-type", "x-request-id"):
        assert lane.headers[header] == route.headers[header], header
    assert int(lane.headers["content-length"]) == len(lane.content)


async def test_what_the_lane_does_not_answer_reaches_the_app(
    model_path: Path, manager: ModelManager, uci: UciCycles
) -> None:
    app = _app(model_path, manager, lane=True, route=True)
    broken = await _post(app, orjson.dumps(uci.request("nominal", "lane-2"))[:-3])
    assert broken.status_code == 422 and broken.json()["detail"][0]["type"] == "json_invalid"
    invalid = await _post(app, orjson.dumps({"equipment_id": "lane-2", "sensor_data": {"PS1": "1,2"}}))
    assert invalid.status_code == 422 and "sensor_data.PS1" in invalid.json()["error"]
    unknown = await _post(app, orjson.dumps({"equipment_id": "lane-2", "sensor_data": {"PS1": [1.0, 2.0]},
                                             "topology_id": "no_such_rig"}))
    assert unknown.status_code == 422 and "topology_id" in unknown.json()["error"]  # an engine error
    for response in (broken, invalid, unknown):
        assert response.json()["request_id"] == response.headers["x-request-id"]
        assert_no_stack_trace(response)


async def test_an_unexpected_engine_error_is_a_generic_500(
    model_path: Path, manager: ModelManager, uci: UciCycles, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(model_path, manager, lane=True, route=False)

    async def explode(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("secret internal detail at /srv/app/secret.py line 12")

    monkeypatch.setattr(app.state.engine, "predict_data", explode)
    response = await _post(app, orjson.dumps(uci.request("nominal", "lane-3")), **{"X-Request-ID": "boom"})
    assert response.status_code == 500 and response.json()["request_id"] == "boom"
    assert "secret" not in response.text
    assert_no_stack_trace(response)


async def test_a_client_gone_before_its_body_gets_no_answer() -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    lane = PredictFastLane(_never_called, state=None, exception_handlers={})
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": [(b"content-type", b"application/json")]}
    await lane(scope, receive, send)
    assert sent == []


async def _never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the lane handed on a request it had taken")
