"""`hydrodiag commission`: a new machine's sensor baselines from readings in normal service."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from hydrodiag.cli import app
from hydrodiag.features.graph import build_layout
from hydrodiag.features.window import NormStats
from hydrodiag.topology.schema import Topology
from hydrodiag.topology.templates import TopologyRegistry


def test_commissioned_topology_carries_each_sensors_normal_and_serves_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    readings = {"pressure_pump_main": rng.normal(180.0, 4.0, size=(20, 60)).tolist(),  # windows
                "temperature_cyl_boom": rng.normal(95.0, 2.0, size=600).tolist()}  # undeclared, named
    (tmp_path / "readings.json").write_text(json.dumps(readings))
    out = tmp_path / "excavator_7.json"
    result = CliRunner().invoke(app, ["commission", "--topology", "excavator", "--id", "excavator_7", "--readings",
                                      str(tmp_path / "readings.json"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    topology = Topology.model_validate_json(out.read_text())
    assert topology.id == "excavator_7"
    by_name = {s.name: s for s in topology.sensors}
    assert by_name["pressure_pump_main"].baseline is not None
    assert abs(by_name["pressure_pump_main"].baseline.mean - 180.0) < 0.5
    assert abs(by_name["pressure_pump_main"].baseline.std - 4.0) < 0.3
    assert by_name["temperature_cyl_boom"].component == "cyl_boom" and by_name["temperature_cyl_boom"].baseline
    template = TopologyRegistry().get("excavator")
    assert len(topology.sensors) == len(template.sensors) + 1
    layout = build_layout(topology, ["pressure_pump_main", "temperature_cyl_boom"])
    assert layout.baseline(NormStats())[2].tolist() == [1.0, 1.0]


def test_commissioning_refuses_bad_readings_naming_the_sensor(tmp_path: Path) -> None:
    for readings, expected in (({"pressure_pump_main": [1.0, 2.0]}, "readings.pressure_pump_main: needs at least 10"),
                               ({"no_such_sensor": [1.0] * 20}, "readings.no_such_sensor"),
                               ({"pressure_pump_main": ["x"] * 20}, "readings.pressure_pump_main")):
        (tmp_path / "r.json").write_text(json.dumps(readings))
        result = CliRunner().invoke(app, ["commission", "--topology", "excavator", "--readings",
                                          str(tmp_path / "r.json"), "--out", str(tmp_path / "t.json")])
        assert result.exit_code == 2
        assert expected in result.output
        assert "Traceback" not in result.output
