"""History, equipment bindings, topology registration and the OIP v2 paths over real HTTP."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from conftest import UciCycles, assert_no_stack_trace

from hydrodiag.taxonomy import ANOMALY_TYPES

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_history_is_paginated_and_filtered_by_time(client: httpx.Client, uci: UciCycles) -> None:
    equipment = _unique("hist")
    for i in range(5):
        stamp = (T0 + timedelta(hours=i)).isoformat()
        response = client.post("/predict", json=uci.request("nominal", equipment, timestamp=stamp),
                               headers={"X-Request-ID": f"{equipment}-{i}"})
        assert response.status_code == 200
    page = client.get(f"/equipment/{equipment}/history", params={"limit": 2}).json()
    assert page["total"] == 5 and page["next_offset"] == 2
    assert [item["request_id"] for item in page["items"]] == [f"{equipment}-0", f"{equipment}-1"]
    item = page["items"][0]
    assert set(item["anomaly_probabilities"]) == set(ANOMALY_TYPES)
    assert {"cooler", "valve", "pump", "accumulator"} <= set(item["component_health"])
    assert item["model_version"] and item["topology_id"] == "uci_test_rig" and item["latency_ms"] > 0
    last = client.get(f"/equipment/{equipment}/history", params={"limit": 2, "offset": 4}).json()
    assert len(last["items"]) == 1 and last["next_offset"] is None
    window = client.get(f"/equipment/{equipment}/history", params={
        "from": (T0 + timedelta(hours=1)).isoformat(), "to": (T0 + timedelta(hours=3)).isoformat()}).json()
    assert [i["request_id"] for i in window["items"]] == [f"{equipment}-1", f"{equipment}-2"]
    assert client.get(f"/equipment/{_unique('nobody')}/history").json()["total"] == 0
    bad = client.get(f"/equipment/{equipment}/history", params={"from": T0.isoformat(), "to": T0.isoformat()})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "to"
    too_big = client.get(f"/equipment/{equipment}/history", params={"limit": 5000})
    assert too_big.status_code == 422 and "limit" in too_big.json()["error"]


def test_binding_a_topology_and_registering_one(client: httpx.Client, uci: UciCycles) -> None:
    topology_id = _unique("press_line")
    topology = {
        "id": topology_id, "name": "press line",
        "components": [{"id": "pump", "type": "pump"}, {"id": "ram", "type": "cylinder"}],
        "edges": [{"source": "pump", "target": "ram", "type": "hydraulic_line", "length_m": 3.0}],
        "sensors": [{"name": "p_out", "component": "pump", "quantity": "pressure"},
                    {"name": "t_ram", "component": "ram", "quantity": "temperature"}],
    }
    created = client.post("/topologies", json=topology)
    assert created.status_code == 201 and created.json()["id"] == topology_id
    assert client.get(f"/topologies/{topology_id}").status_code == 200
    assert client.post("/topologies", json=topology).status_code == 409
    assert client.post("/topologies", json={**topology, "id": "uci_test_rig"}).status_code == 409
    dangling = {**topology, "id": _unique("bad"), "edges": [{"source": "pump", "target": "ghost"}]}
    refused = client.post("/topologies", json=dangling)
    assert refused.status_code == 422 and "ghost" in refused.text

    equipment = _unique("press")
    readings = {"equipment_id": equipment, "sensor_data": {"p_out": [200.0, 201.0, 199.0], "t_ram": [40.0, 41.0]}}
    # Without a binding, sensor names alone say nothing about the machine.
    assert client.post("/predict", json=readings).status_code == 422
    bound = client.put(f"/equipment/{equipment}", json={"topology_id": topology_id})
    assert bound.status_code == 200 and bound.json() == {"equipment_id": equipment, "topology_id": topology_id}
    assert client.get(f"/equipment/{equipment}").json()["topology_id"] == topology_id
    assert client.get(f"/equipment/{_unique('unbound')}").status_code == 404
    served = client.post("/predict", json=readings)
    assert served.status_code == 200 and served.json()["topology_id"] == topology_id
    assert {c["id"] for c in served.json()["components"]} == {"pump", "ram"}
    unknown = client.put(f"/equipment/{equipment}", json={"topology_id": "no_such_rig"})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["field"] == "topology_id"
    # A rig bound to the UCI template takes its cycles without naming the topology.
    rig = _unique("rig")
    client.put(f"/equipment/{rig}", json={"topology_id": "uci_test_rig"}).raise_for_status()
    plain = {"equipment_id": rig, "sensor_data": uci.sensor_data("nominal")}
    assert client.post("/predict", json=plain).json()["topology_id"] == "uci_test_rig"


def test_open_inference_protocol(client: httpx.Client, uci: UciCycles) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2/models/hydrodiag").json()
    active = client.get("/ready").json()["model_version"]
    assert meta["name"] == "hydrodiag" and meta["versions"][0] == active
    assert client.get("/v2/models/other").status_code == 404
    data = uci.sensor_data("cooler_failing")
    inputs = [{"name": name, "shape": [len(series)], "datatype": "FP64", "data": series}
              for name, series in data.items()]
    inputs[0]["shape"] = [1, len(data[inputs[0]["name"]])]
    body = {"id": "oip-1", "parameters": {"equipment_id": _unique("oip"), "topology_id": "uci_test_rig"},
            "inputs": inputs}
    answer = client.post("/v2/models/hydrodiag/infer", json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["model_name"] == "hydrodiag" and result["model_version"] == active and result["id"] == "oip-1"
    outputs = {o["name"]: o for o in result["outputs"]}
    ids = outputs["component_ids"]["data"]
    health = outputs["component_health"]["data"]
    assert outputs["component_anomaly_probabilities"]["shape"] == [len(ids), len(ANOMALY_TYPES)]
    assert len(outputs["component_anomaly_probabilities"]["data"]) == len(ids) * len(ANOMALY_TYPES)
    assert outputs["anomaly_types"]["data"] == list(ANOMALY_TYPES)
    # Same answer as the REST API: the failing cooler is the least healthy component.
    assert ids[health.index(min(health))] == "cooler"
    rest = client.post("/predict", json=uci.request("cooler_failing", _unique("rest"))).json()
    assert abs(rest["health"]["score"] - outputs["system_health"]["data"][0]) < 1e-5
    selected = client.post("/v2/models/hydrodiag/infer", json={**body, "outputs": [{"name": "system_health"}]})
    assert [o["name"] for o in selected.json()["outputs"]] == ["system_health"]
    versioned = client.post(f"/v2/models/hydrodiag/versions/{active}/infer", json=body)
    assert versioned.status_code == 200
    assert client.post("/v2/models/hydrodiag/versions/0.0.0-none/infer", json=body).status_code == 404

    wrong_shape = {**body, "inputs": [{**inputs[1], "shape": [3]}]}
    refused = client.post("/v2/models/hydrodiag/infer", json=wrong_shape)
    assert refused.status_code == 422 and refused.json()["detail"][0]["field"] == "inputs[0].data"
    no_equipment = client.post("/v2/models/hydrodiag/infer", json={**body, "parameters": {}})
    assert no_equipment.status_code == 422 and "parameters.equipment_id" in no_equipment.json()["error"]
    nan = client.post("/v2/models/hydrodiag/infer", content=b'{"parameters": {"equipment_id": "e"}, "inputs": '
                      b'[{"name": "PS1", "shape": [2], "datatype": "FP32", "data": [1.0, NaN]}]}',
                      headers={"Content-Type": "application/json"})
    assert nan.status_code == 422
    for response in (refused, no_equipment, nan):
        assert_no_stack_trace(response)


def test_models_listing(client: httpx.Client) -> None:
    listing = client.get("/models").json()
    active = client.get("/ready").json()["model_version"]
    assert listing["active"] == active
    assert any(v["active"] and v["version"] == active for v in listing["versions"])
    assert all("/" not in v["file"] for v in listing["versions"])  # names only, no internal paths
    assert client.get("/stats").json()["model_path"] == "models/default.ckpt" or \
        not client.get("/stats").json()["model_path"].startswith("/")
    assert client.post("/models/0.0.0-none/activate").status_code == 404
