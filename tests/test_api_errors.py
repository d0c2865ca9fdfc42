"""Every class of bad input gets a 422 naming the field (and the batch item); no body leaks internals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import UciCycles, assert_no_stack_trace, engine_settings
from fastapi import FastAPI

from hydrodiag.api.app import create_app
from hydrodiag.inference.engine import InferenceEngine
from hydrodiag.inference.manager import ModelManager

GOOD = [100.0, 101.0, 102.0, 101.0]

Payload = Callable[[UciCycles], Any]


def _raw(text: str) -> bytes:
    return text.encode()


def _single(sensor_data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"equipment_id": "bad-input", "sensor_data": sensor_data, **extra}


# (case id, payload builder (dict -> JSON body, bytes -> sent as is), text the error must name)
SINGLE_CASES: list[tuple[str, Payload, str]] = [
    ("nan", lambda u: _raw('{"equipment_id": "e", "sensor_data": {"PS1": [1.0, NaN, 2.0]}}'),
     "sensor_data.PS1"),
    ("infinity", lambda u: _raw('{"equipment_id": "e", "sensor_data": {"PS1": [1.0, Infinity]}}'),
     "sensor_data.PS1"),
    ("minus_infinity", lambda u: _raw('{"equipment_id": "e", "sensor_data": {"PS1": [-Infinity, 1.0]}}'),
     "sensor_data.PS1"),
    ("overflow", lambda u: _raw('{"equipment_id": "e", "sensor_data": {"PS1": [1.0, 1e999]}}'),
     "sensor_data.PS1"),
    ("empty_series", lambda u: _single({"pressure_pump_main": []}), "sensor_data.pressure_pump_main"),
    ("one_value", lambda u: _single({"pressure_pump_main": [5.0]}), "sensor_data.pressure_pump_main"),
    ("too_long", lambda u: _single({"pressure_pump_main": [1.0] * 5001}), "sensor_data.pressure_pump_main"),
    ("no_sensors", lambda u: _single({}), "sensor_data"),
    ("too_many_sensors", lambda u: _single({f"pressure_pump_{i}": GOOD for i in range(33)}), "sensor_data"),
    ("unknown_sensor_with_topology",
     lambda u: {**u.request("nominal", "e"), "sensor_data": {**u.sensor_data("nominal"), "XX9": GOOD}},
     "sensor_data.XX9"),
    ("unknown_sensor_without_topology", lambda u: _single({"mystery": GOOD}), "sensor_data.mystery"),
    ("uninferable_component", lambda u: _single({"pressure_gizmo": GOOD}), "sensor_data.pressure_gizmo"),
    ("unknown_topology", lambda u: _single({"PS1": GOOD}, topology_id="no_such_rig"), "topology_id"),
    ("both_topologies",
     lambda u: _single({"PS1": GOOD}, topology_id="uci_test_rig",
                       topology={"id": "t", "components": [{"id": "pump", "type": "pump"}]}),
     "topology"),
    ("inconsistent_inline_topology",
     lambda u: _single({"pressure_pump": GOOD},
                       topology={"id": "t", "components": [{"id": "pump", "type": "pump"}],
                                 "edges": [{"source": "pump", "target": "ghost"}]}),
     "topology"),
    ("series_is_a_string", lambda u: _single({"PS1": "1,2,3"}), "sensor_data.PS1"),
    ("numbers_as_strings", lambda u: _single({"PS1": ["1.0", "2.0"]}), "sensor_data.PS1"),
    ("booleans", lambda u: _single({"PS1": [True, False]}), "sensor_data.PS1"),
    ("nested_lists", lambda u: _single({"PS1": [[1.0, 2.0], [3.0, 4.0]]}), "sensor_data.PS1"),
    ("sensor_data_is_a_list", lambda u: {"equipment_id": "e", "sensor_data": [1.0, 2.0]}, "sensor_data"),
    ("missing_equipment_id", lambda u: {"sensor_data": {"PS1": GOOD}}, "equipment_id"),
    ("empty_equipment_id", lambda u: {"equipment_id": "", "sensor_data": {"PS1": GOOD}}, "equipment_id"),
    ("long_equipment_id", lambda u: {"equipment_id": "x" * 129, "sensor_data": {"PS1": GOOD}},
     "equipment_id"),
    ("numeric_equipment_id", lambda u: {"equipment_id": 7, "sensor_data": {"PS1": GOOD}}, "equipment_id"),
    ("bad_timestamp", lambda u: _single({"PS1": GOOD}, timestamp="yesterday"), "timestamp"),
    ("unknown_field", lambda u: _single({"PS1": GOOD}, sensordata={}), "sensordata"),
    ("not_json", lambda u: _raw('{"equipment_id": "e", "sensor_data": {'), "body"),
    ("json_array", lambda u: _raw("[1, 2, 3]"), "body"),
]


def _post(client: httpx.Client, path: str, payload: Any) -> httpx.Response:
    content = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return client.post(path, content=content, headers={"content-type": "application/json"})


def _assert_422_naming(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert field in body["error"], body
    assert any(field in item["field"] for item in body["detail"]), body
    assert all(isinstance(item["loc"], list) for item in body["detail"])
    assert body["request_id"] == response.headers["x-request-id"]
    assert_no_stack_trace(response)


@pytest.mark.parametrize(("payload", "field"), [(p, f) for _, p, f in SINGLE_CASES],
                         ids=[case for case, _, _ in SINGLE_CASES])
def test_bad_single_request(client: httpx.Client, uci: UciCycles, payload: Payload, field: str) -> None:
    _assert_422_naming(_post(client, "/predict", payload(uci)), field)


def _batch(uci: UciCycles, bad_index: int, bad_item: dict[str, Any]) -> dict[str, Any]:
    items = [uci.request("nominal", f"b{i}") for i in range(4)]
    items[bad_index] = bad_item
    return {"requests": items}


def _raw_batch(uci: UciCycles, bad_index: int, raw_item: str) -> bytes:
    items = [orjson.dumps(uci.request("nominal", f"b{i}")) for i in range(4)]
    items[bad_index] = raw_item.encode()
    return b'{"requests": [' + b", ".join(items) + b"]}"


BATCH_CASES: list[tuple[str, Callable[[UciCycles], Any], str]] = [
    ("non_finite_item",
     lambda u: _raw_batch(u, 2, '{"equipment_id": "x", "sensor_data": {"PS1": [1.0, NaN]}}'),
     "requests[2].sensor_data.PS1"),
    ("short_series_item", lambda u: _batch(u, 1, _single({"pressure_pump_main": [1.0]})),
     "requests[1].sensor_data.pressure_pump_main"),
    ("unknown_sensor_item", lambda u: _batch(u, 3, _single({"mystery": GOOD})),
     "requests[3].sensor_data.mystery"),
    ("unknown_topology_item", lambda u: _batch(u, 0, _single({"PS1": GOOD}, topology_id="nope")),
     "requests[0].topology_id"),
    ("wrong_type_item", lambda u: _batch(u, 2, _single({"PS1": "x"})), "requests[2].sensor_data.PS1"),
    ("too_many_items", lambda u: {"requests": [u.request("nominal", f"m{i}") for i in range(17)]},
     "requests"),
    ("empty_batch", lambda u: {"requests": []}, "requests"),
    ("requests_missing", lambda u: {"items": []}, "requests"),
]


@pytest.mark.parametrize(("payload", "field"), [(p, f) for _, p, f in BATCH_CASES],
                         ids=[case for case, _, _ in BATCH_CASES])
def test_bad_batch_request_names_the_item(
    client: httpx.Client, uci: UciCycles, payload: Callable[[UciCycles], Any], field: str
) -> None:
    _assert_422_naming(_post(client, "/predict/batch", payload(uci)), field)


def test_a_rejected_batch_stores_nothing(client: httpx.Client, uci: UciCycles) -> None:
    before = client.get("/stats").json()["requests"]
    response = _post(client, "/predict/batch", _batch(uci, 3, _single({"mystery": GOOD})))
    assert response.status_code == 422
    assert client.get("/stats").json()["requests"] == before


def test_unknown_route_and_method(client: httpx.Client) -> None:
    missing = client.get("/no/such/path")
    assert missing.status_code == 404 and missing.json()["error"]
    wrong_method = client.get("/predict")
    assert wrong_method.status_code == 405
    for response in (missing, wrong_method):
        assert_no_stack_trace(response)


@pytest.fixture
def app_with_engine(model_path: Path, manager: ModelManager) -> FastAPI:
    engine = InferenceEngine(settings=engine_settings(model_path, max_queue_size=1, batch_size=1),
                             manager=manager)
    engine.load()
    return create_app(engine.settings, engine)


async def test_full_queue_answers_503_with_retry_after(app_with_engine: FastAPI, uci: UciCycles) -> None:
    transport = httpx.ASGITransport(app=app_with_engine)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        responses = await asyncio.gather(
            *(http.post("/predict", json=uci.request("nominal", f"q{i}")) for i in range(24))
        )
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    for response in responses:
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
            assert "queue is full" in response.json()["error"]
            assert_no_stack_trace(response)


async def test_unexpected_error_is_a_generic_500(app_with_engine: FastAPI) -> None:
    async def explode() -> None:
        raise RuntimeError("secret internal detail at /srv/app/secret.py line 12")

    app_with_engine.add_api_route("/explode", explode)
    transport = httpx.ASGITransport(app=app_with_engine)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        response = await http.get("/explode", headers={"X-Request-ID": "trace-me"})
    assert response.status_code == 500
    body = response.json()
    assert body["request_id"] == "trace-me" and response.headers["x-request-id"] == "trace-me"
    assert "secret" not in response.text and "RuntimeError" not in response.text
    assert_no_stack_trace(response)
