"""Physics-based simulator: determinism, shapes, label semantics and the physics users rely on."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hydrodiag.cli import app
from hydrodiag.taxonomy import ANOMALY_TYPES, COMPONENT_TYPES
from hydrodiag.topology.schema import Component, Edge, Sensor, Topology, infer_topology
from hydrodiag.topology.templates import load_templates
from hydrodiag.training.baseline import gradient_boosting_detections
from hydrodiag.training.separability import readings
from hydrodiag.training.simulator import (
    DETECTION_FLOOR,
    SimulatedBatch,
    compatible_anomalies,
    measure_throughput,
    observable_pairs,
    simulate,
    simulate_degradation,
    simulate_fleet,
)

TEMPLATES = load_templates()
A = {a: i for i, a in enumerate(ANOMALY_TYPES)}


def _sensor(batch: SimulatedBatch, name: str) -> np.ndarray:
    return batch.series[:, batch.sensor_names.index(name)].astype(np.float64)


def _pair(topology: str, component: str, anomaly: str, severity: float, n: int = 24) -> tuple[SimulatedBatch, ...]:
    """The same unit and operating situations, healthy and with a fault (common random numbers)."""
    topo = TEMPLATES[topology]
    healthy = simulate_degradation(topo, component, anomaly, n, seed=5, start_severity=0.0, end_severity=0.0)
    faulty = simulate_degradation(topo, component, anomaly, n, seed=5, start_severity=severity,
                                  end_severity=severity)
    return healthy, faulty


def test_same_seed_same_data_other_seed_other_data() -> None:
    topo = TEMPLATES["press"]
    a, b, c = simulate(topo, 40, seed=3), simulate(topo, 40, seed=3), simulate(topo, 40, seed=4)
    np.testing.assert_array_equal(a.series, b.series)
    np.testing.assert_array_equal(a.component_health, b.component_health)
    assert not np.array_equal(a.series, c.series)


def test_shapes_dtypes_and_label_ranges() -> None:
    topo = TEMPLATES["excavator"]
    batch = simulate(topo, 50, n_samples=32, sample_rate_hz=2.0, seed=1)
    n_s, n_c = len(topo.sensors), len(topo.components)
    assert batch.series.shape == (50, n_s, 32) and batch.series.dtype == np.float32
    assert np.isfinite(batch.series).all()
    assert batch.sensor_names == [s.name for s in topo.sensors]
    assert batch.component_ids == [c.id for c in topo.components]
    assert batch.component_health.shape == (50, n_c)
    assert batch.component_anomalies.shape == (50, n_c, len(ANOMALY_TYPES))
    assert set(np.unique(batch.component_anomalies)) <= {0.0, 1.0}
    assert ((batch.component_health >= 0) & (batch.component_health <= 1)).all()
    np.testing.assert_allclose(batch.system_health, batch.component_health.min(axis=1))
    np.testing.assert_array_equal(batch.system_anomalies, batch.component_anomalies.max(axis=1))
    assert batch.topology_id == "excavator" and len(batch) == 50


def test_healthy_windows_carry_no_anomaly_and_health_follows_severity() -> None:
    batch = simulate(TEMPLATES["crane"], 300, seed=2, fault_fraction=0.5)
    healthy = batch.system_health == 1.0
    assert 0.3 < healthy.mean() < 0.7
    assert not batch.system_anomalies[healthy].any()
    assert (batch.component_health[healthy] == 1.0).all()
    present = batch.severities >= DETECTION_FLOOR
    np.testing.assert_array_equal(batch.component_anomalies, present.astype(np.float32))
    worst = np.where(present, batch.severities, 0.0).max(axis=2)
    np.testing.assert_allclose(batch.component_health, 1.0 - worst, atol=1e-6)
    # Sub-floor ("incipient") faults exist in healthy-labelled windows: simulated, labelled healthy.
    assert (batch.severities[healthy] > 0).any()
    assert simulate(TEMPLATES["crane"], 30, seed=2, fault_fraction=0.0, incipient_fraction=0.0).system_health.min() == 1


def test_injected_type_shows_up_on_the_chosen_component_only() -> None:
    topo = TEMPLATES["press"]
    batch = simulate(topo, 60, seed=7, fault_fraction=1.0, faults=[("pump_main", "leakage")])
    pump = batch.component_ids.index("pump_main")
    assert batch.component_anomalies[:, pump, A["leakage"]].all()
    others = np.delete(batch.component_anomalies, pump, axis=1)
    assert not others.any() and batch.component_anomalies.sum(axis=(1, 2)).max() == 1
    with pytest.raises(ValueError, match="cannot be injected"):
        simulate(topo, 5, faults=[("tank", "valve_stiction")])


def test_compatibility_table() -> None:
    for ctype in COMPONENT_TYPES:
        row = compatible_anomalies(ctype)
        assert row and list(row) == [a for a in ANOMALY_TYPES if a in row]
    assert compatible_anomalies("valve") == ("pressure_drop", "leakage", "flow_restriction", "valve_stiction")
    assert "valve_stiction" not in compatible_anomalies("pump")
    with pytest.raises(ValueError):
        compatible_anomalies("turbine")
    covered = {a for topo in ("excavator", "press", "crane") for _, a in observable_pairs(TEMPLATES[topo])}
    assert covered == set(range(len(ANOMALY_TYPES)))


def test_overheating_cooler_raises_temperatures() -> None:
    healthy, hot = _pair("press", "cooler", "overheating", 0.8)
    for name in ("temperature_tank", "temperature_cooler_in", "temperature_cooler_out", "temperature_pump_main"):
        assert _sensor(hot, name).mean() > _sensor(healthy, name).mean() + 3.0, name
    # A weaker cooler takes a smaller temperature drop out of the oil.
    drop = _sensor(healthy, "temperature_cooler_in") - _sensor(healthy, "temperature_cooler_out")
    drop_hot = _sensor(hot, "temperature_cooler_in") - _sensor(hot, "temperature_cooler_out")
    assert drop_hot.mean() < drop.mean()


def test_pump_leakage_lowers_flow_and_efficiency() -> None:
    healthy, leaking = _pair("press", "pump_main", "leakage", 0.7)
    assert _sensor(leaking, "flow_pump_main").mean() < 0.9 * _sensor(healthy, "flow_pump_main").mean()


def test_contamination_raises_filter_pressure_drop_and_particle_code() -> None:
    healthy, dirty = _pair("press", "filter_return", "contamination", 0.8)

    def drop(b: SimulatedBatch) -> np.ndarray:
        return _sensor(b, "pressure_filter_return_in") - _sensor(b, "pressure_filter_return_out")

    assert drop(dirty).mean() > 1.5 * drop(healthy).mean()
    code = "particle_count_filter_return"
    assert _sensor(dirty, code).mean() > _sensor(healthy, code).mean()
    excavator_clean, excavator_dirty = _pair("excavator", "filter_return", "contamination", 0.8)
    assert (_sensor(excavator_dirty, "pressure_filter_return_dp").mean()
            > _sensor(excavator_clean, "pressure_filter_return_dp").mean())


def test_cavitation_raises_vibration_and_lowers_inlet_pressure() -> None:
    healthy, cavitating = _pair("crane", "pump_main", "cavitation", 0.6)
    assert _sensor(cavitating, "vibration_pump_main").mean() > 2 * _sensor(healthy, "vibration_pump_main").mean()
    inlet = "pressure_pump_main_suction"
    assert _sensor(cavitating, inlet).mean() < _sensor(healthy, inlet).mean()
    # Broadband: the vibration gets erratic, not just larger.
    assert _sensor(cavitating, "vibration_pump_main").std(axis=1).mean() > 3 * _sensor(
        healthy, "vibration_pump_main").std(axis=1).mean()


def test_imbalance_raises_vibration_of_that_machine_only() -> None:
    healthy, shaky = _pair("excavator", "engine", "vibration_anomaly", 0.7)
    assert _sensor(shaky, "vibration_engine").mean() > 1.5 * _sensor(healthy, "vibration_engine").mean()
    np.testing.assert_allclose(_sensor(shaky, "vibration_pump_main"), _sensor(healthy, "vibration_pump_main"))


def test_seal_degradation_loses_holding_pressure_and_oil() -> None:
    healthy, worn = _pair("press", "cyl_main", "seal_degradation", 0.8)
    assert _sensor(worn, "level_tank").mean() < _sensor(healthy, "level_tank").mean()
    assert _sensor(worn, "pressure_cyl_main_cap").mean() < _sensor(healthy, "pressure_cyl_main_cap").mean()


def test_accumulator_precharge_loss_deepens_pressure_sags() -> None:
    healthy, weak = _pair("press", "accumulator", "pressure_drop", 0.9, n=48)
    assert _sensor(weak, "pressure_accumulator").min(axis=1).mean() < _sensor(
        healthy, "pressure_accumulator").min(axis=1).mean()


def test_flow_restriction_raises_upstream_pressure() -> None:
    healthy, blocked = _pair("crane", "manifold_swivel", "flow_restriction", 0.7)
    assert _sensor(blocked, "pressure_pump_main").mean() > _sensor(healthy, "pressure_pump_main").mean() + 5.0


def test_valve_stiction_decouples_spool_position_from_command() -> None:
    healthy, sticky = _pair("press", "valve_prop", "valve_stiction", 0.8)

    def coupling(b: SimulatedBatch) -> float:
        pos, cur = np.abs(_sensor(b, "position_valve_prop")), _sensor(b, "current_valve_prop")
        return float(np.mean([np.corrcoef(p, c)[0, 1] for p, c in zip(pos, cur, strict=True) if c.std() > 0.05]))

    assert coupling(sticky) < coupling(healthy) - 0.05


def test_degradation_trajectory_is_monotonic_and_labelled() -> None:
    batch = simulate_degradation(TEMPLATES["crane"], "motor_winch", "leakage", 40, seed=1, profile="accelerating")
    winch = batch.component_ids.index("motor_winch")
    assert (np.diff(batch.component_health[:, winch]) <= 1e-7).all()
    assert (np.diff(batch.system_health) <= 1e-7).all()
    assert batch.system_health[0] == 1.0 and batch.system_health[-1] == pytest.approx(0.0, abs=1e-6)
    assert batch.component_anomalies[-1, winch, A["leakage"]] == 1
    assert batch.component_anomalies[:, :, [i for i in range(9) if i != A["leakage"]]].sum() == 0
    speed = _sensor(batch, "speed_motor_winch")
    assert speed[-10:].mean() < speed[:10].mean()
    with pytest.raises(ValueError, match="cannot be injected"):
        simulate_degradation(TEMPLATES["crane"], "tank", "valve_stiction", 5)


@pytest.mark.parametrize("topology_id", sorted(TEMPLATES))
def test_every_template_loads_and_simulates_plausible_values(topology_id: str) -> None:
    topo = TEMPLATES[topology_id]
    assert 8 <= len(topo.components) <= 14 and 12 <= len(topo.sensors) <= 25
    batch = simulate(topo, 16, seed=0)
    assert np.isfinite(batch.series).all()
    for j, quantity in enumerate(batch.sensor_quantities):
        values = batch.series[:, j]
        if quantity == "temperature":
            assert values.min() > -25 and values.max() < 130, batch.sensor_names[j]
        if quantity == "pressure":
            assert values.min() > -2 and values.max() < 500, batch.sensor_names[j]
        if quantity == "particle_count":
            np.testing.assert_array_equal(values, np.round(values))


def test_any_topology_simulates_including_unusual_sensor_sets() -> None:
    inferred = infer_topology(["pressure_pump_main", "flow_pump_main", "temperature_tank", "position_cyl_boom",
                               "pressure_valve_main", "vibration_motor_drive"])
    odd = Topology(
        id="odd", components=[Component(id="cyl", type="cylinder"), Component(id="valve", type="valve"),
                              Component(id="cooler", type="cooler")],
        edges=[Edge(source="valve", target="cyl")],
        sensors=[Sensor(name="speed_cyl", component="cyl", quantity="speed"),
                 Sensor(name="particles_valve", component="valve", quantity="particle_count"),
                 Sensor(name="p1", component="cyl", quantity="pressure", description="rod side"),
                 Sensor(name="p2", component="cyl", quantity="pressure", description="cap side"),
                 Sensor(name="cooling", component="cooler", quantity="cooling_power")])
    for topo in (inferred, odd):
        batch = simulate(topo, 12, seed=0)
        assert batch.series.shape == (12, len(topo.sensors), 60) and np.isfinite(batch.series).all()


def test_throughput_helper_reports_a_rate() -> None:
    assert measure_throughput(TEMPLATES["press"], n_windows=32) > 0


def test_cli_simulate_writes_npz_and_sidecar(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    out = tmp_path / "press.npz"
    result = runner.invoke(app, ["simulate", "--topology", "press", "--windows", "30", "--seed", "1",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = np.load(out)
    assert data["series"].shape == (30, len(TEMPLATES["press"].sensors), 60)
    assert list(data["anomaly_types"]) == list(ANOMALY_TYPES)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["topology_id"] == "press" and meta["windows"] == 30 and meta["sensors"][0]["unit"]

    deg = tmp_path / "deg.npz"
    result = runner.invoke(app, ["simulate", "--topology", "press", "--windows", "20", "--out", str(deg),
                                 "--anomaly", "leakage", "--component", "pump_main", "--degradation"])
    assert result.exit_code == 0, result.output
    assert (np.diff(np.load(deg)["system_health"]) <= 1e-7).all()

    bad = runner.invoke(app, ["simulate", "--topology", "press", "--windows", "5", "--out", str(deg),
                              "--anomaly", "leakage", "--component", "cooler"])
    assert bad.exit_code == 2 and "cooler" in bad.output


def test_fleet_observes_each_unit_beside_its_own_commissioning() -> None:
    fleet = simulate_fleet(TEMPLATES["excavator"], 40, 8, 4, seed=3)
    sensors = len(TEMPLATES["excavator"].sensors)
    assert fleet.commissioning.shape == (40, 8, sensors, 60) and len(fleet.observed) == 160
    assert list(fleet.unit_of_window) == [u for u in range(40) for _ in range(4)]
    assert fleet.observed.system_anomalies.any(axis=1).mean() > 0.3  # faults are injected after commissioning
    # A unit's design spread and sensor offsets stay with it: a healthy window's levels lie nearest
    # its own unit's commissioning levels far more often than the 1 in 40 of chance.
    levels = fleet.commissioning.mean(axis=(1, 3))  # [units, sensors]
    scale = fleet.commissioning.std(axis=(0, 1, 3)) + 1e-6
    observed = fleet.observed.series.mean(axis=2)
    nearest = (((observed[:, None, :] - levels[None]) / scale) ** 2).sum(axis=2).argmin(axis=1)
    healthy = ~fleet.observed.system_anomalies.any(axis=1)
    assert (nearest == fleet.unit_of_window)[healthy].mean() > 0.5


def test_cli_separability_scores_fleet_and_own_unit_readings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "separability.json"
    result = CliRunner().invoke(app, ["separability", "--topology", "press", "--units", "30", "--test-units", "10",
                                      "--commissioning-windows", "4", "--windows-per-unit", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report["readings"]) == {"fleet", "own unit", "both"}
    for scores in report["readings"].values():
        assert 0.0 <= scores["macro_f1"] <= 1.0 and set(scores["per_type_f1"]) == set(ANOMALY_TYPES)
        assert scores["windows"] == 30
    bad = CliRunner().invoke(app, ["separability", "--topology", "submarine"])
    assert bad.exit_code == 2 and "submarine" in bad.output


def test_cli_separability_with_gradient_boosted_trees_on_chosen_readings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "trees.json"
    result = CliRunner().invoke(app, ["separability", "--topology", "press", "--units", "20", "--test-units", "6",
                                      "--commissioning-windows", "4", "--windows-per-unit", "3", "--model", "trees",
                                      "--readings", "fleet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["model"] == "trees" and set(report["readings"]) == {"fleet"}
    for option, value in (("--model", "oracle"), ("--readings", "fleet,tea leaves")):
        bad = CliRunner().invoke(app, ["separability", "--topology", "press", option, value])
        assert bad.exit_code == 2 and value.split(",")[-1] in bad.output


def test_trees_read_every_value_and_change_of_each_reading() -> None:
    fleet = simulate_fleet(load_templates()["press"], 3, 2, 2, seed=0)
    _, sensors, steps = fleet.observed.series.shape
    plain, every = readings(fleet), readings(fleet, every_value=True)
    added = sensors * (2 * steps - 1)
    assert every["fleet"].shape[1] == plain["fleet"].shape[1] + added
    assert every["own unit"].shape[1] == plain["own unit"].shape[1] + added
    assert every["both"].shape[1] == plain["both"].shape[1] + 2 * added


def test_gradient_boosting_detections_learn_each_type_and_keep_constant_ones() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 5))
    labels = np.zeros((400, len(ANOMALY_TYPES)), dtype=int)
    labels[:, 0] = features[:, 2] > 0.3  # one type follows one feature; the others never occur
    labels[:5, 1] = 1  # a rare type is still fitted, not dropped
    test = rng.normal(size=(200, 5))
    detected = gradient_boosting_detections(features, labels, test)
    assert detected.shape == (200, len(ANOMALY_TYPES))
    assert (detected[:, 0] == (test[:, 2] > 0.3)).mean() > 0.95
    assert not detected[:, 2:].any()


def test_machine_variants_are_other_machine_models_of_the_same_kind() -> None:
    from hydrodiag.training.simulator.variants import machine_variants, removable

    excavator = TEMPLATES["excavator"]
    assert removable(excavator) == ["accumulator_pilot"]  # a leaf on a branch line; actuators return oil
    variants = machine_variants(excavator, 8, seed=3)
    assert variants[0] is excavator and len({v.id for v in variants}) == 8
    assert variants == machine_variants(excavator, 8, seed=3)  # seeded
    lost = [v for v in variants if len(v.components) < len(excavator.components)]
    assert 0 < len(lost) < 8  # some variants lack the accumulator, with its edges and sensors
    for variant in lost:
        assert "accumulator_pilot" not in {c.id for c in variant.components}
        assert all("accumulator_pilot" not in (e.source, e.target) for e in variant.edges)
        assert all(s.component != "accumulator_pilot" for s in variant.sensors)
    # Same readings, same faults drawn: only the machine model differs, so the windows do.
    pressure = excavator.sensors[0].name
    levels = []
    for topology in variants[:3]:
        batch = simulate(topology, 40, seed=5, fault_fraction=0.0)
        levels.append(float(np.asarray(batch.series)[:, list(batch.sensor_names).index(pressure)].mean()))
    assert len({round(level, 3) for level in levels}) == 3
    assert np.isfinite(levels).all()


def test_variants_train_with_their_own_baselines_and_a_checkpoint_keeps_the_templates_only() -> None:
    from hydrodiag.training.recipe import Recipe, build_training_set
    from hydrodiag.training.train import TrainConfig

    recipe = Recipe(train=TrainConfig(epochs=1), simulated_windows=12, simulated_pool=24, topology_variants=3,
                    holdout_topology="crane")
    training, norm = build_training_set(recipe, None, np.array([], dtype=np.int64))
    assert [len(pool) for pool in training.pools] == [8] * 6  # 2 topologies x 3 variants, 24 / 3 each
    assert training.epoch_size() == 24  # 12 per topology and epoch, as without variants
    sources = {g.source for g in training.epoch(0)}
    assert sources == {f"sim:{t}{v}" for t in ("excavator", "press") for v in ("", ".v1", ".v2")}
    graph = next(g for g in training.pools[1] if g.stats[-1, -1] == 1.0)
    assert graph.source == "sim:excavator.v1"  # encoded with the variant's own baselines
    assert {key.split("/")[0] for key in norm.baselines} == {"excavator", "press"}  # what a checkpoint keeps
