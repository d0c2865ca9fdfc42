"""Training, evaluation and the UCI label mapping: smoke runs of the real commands on real data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import uci_data_dir

from hydrodiag.errors import CheckpointError
from hydrodiag.features.window import resample_rows, resample_series
from hydrodiag.model.checkpoint import load_checkpoint, read_metadata
from hydrodiag.training.datasets.uci import TARGETS, UciData, load_uci, uci_windows
from hydrodiag.training.ensemble import score_ensemble
from hydrodiag.training.evaluate import FoldResult, recall_by_severity, split_folds
from hydrodiag.training.recipe import read_exclude_file

TARGET = {t.component: t for t in TARGETS}


def test_health_mapping_follows_the_issue() -> None:
    assert TARGET["cooler"].health(np.array([100, 20, 3])).tolist() == pytest.approx([1.0, 0.2, 0.03])
    assert TARGET["valve"].health(np.array([100, 73])).tolist() == pytest.approx([1.0, 0.0])
    assert TARGET["valve"].health(np.array([90]))[0] == pytest.approx(17 / 27)
    assert TARGET["pump"].health(np.array([0, 1, 2])).tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert TARGET["accumulator"].health(np.array([130, 115, 90])).tolist() == pytest.approx([1.0, 0.625, 0.0])


def test_nearest_grade_recovers_each_grade_from_its_own_health() -> None:
    for target in TARGETS:
        grades = np.array(target.grades)
        assert target.nearest_grade(target.health(grades)).tolist() == grades.tolist()
        assert target.nearest_grade(np.clip(target.health(grades) + 0.05, 0, 1)).tolist() == grades.tolist()


def test_resampling_keeps_a_series_of_window_length_and_interpolates_others() -> None:
    row = np.arange(60, dtype=np.float64)[None, :]
    assert np.array_equal(resample_rows(row, 60), row.astype(np.float32))
    stretched = resample_series([np.array([0.0, 10.0]), np.arange(60.0)], 11)
    assert stretched[0].tolist() == pytest.approx(list(np.linspace(0, 10, 11)))
    assert stretched[1][0] == 0.0 and stretched[1][-1] == pytest.approx(59.0)


def test_recall_by_severity_bands_each_fault_by_its_own_severity() -> None:
    truth = np.array([[1, 0], [1, 1], [1, 0], [0, 0]])
    severity = np.array([[0.2, 0.0], [0.5, 1.0], [0.9, 0.0], [0.05, 0.0]])  # the last is a sub-floor fault
    detected = np.array([[0, 0], [1, 1], [0, 1], [1, 0]])
    assert recall_by_severity(truth, detected, severity) == {"0.1-0.4": 0.0, "0.4-0.7": 1.0, "0.7-1.0": 0.5}
    assert recall_by_severity(truth[:1], detected[:1], severity[:1]) == {"0.1-0.4": 0.0, "0.4-0.7": None,
                                                                         "0.7-1.0": None}


def test_exclude_file_parsing(tmp_path: Path) -> None:
    path = tmp_path / "exclude.txt"
    path.write_text("# held out\n3\n\n17  # comment\n")
    assert read_exclude_file(path) == {3, 17}
    path.write_text("3\nabc\n")
    with pytest.raises(ValueError, match="abc"):
        read_exclude_file(path)


@pytest.fixture(scope="module")
def data_dir() -> Path:
    found = uci_data_dir()
    if found is None:
        pytest.skip("UCI data not found at ../shared/data/uci_hydraulic_1hz (set HYDRODIAG_DATA)")
    return found


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "hydrodiag.cli", *args], capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_uci_windows_pass_through_the_serving_resampler(data_dir: Path) -> None:
    data = load_uci(data_dir)
    cycles = np.array([0, 1000])
    windows = uci_windows(data, cycles, 64)
    posted = resample_series([data.raw[1000, j] for j in range(len(data.sensor_names))], 64)
    assert np.array_equal(windows[1], posted)


def test_train_smoke_writes_a_self_describing_checkpoint(data_dir: Path, tmp_path: Path) -> None:
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("0\n1\n2\n")
    out = tmp_path / "smoke.ckpt"
    run_cli("train", "--data", str(data_dir), "--out", str(out), "--epochs", "1", "--limit-cycles", "96",
            "--exclude", str(exclude), "--seed", "3", "--model-version", "0.0.1-smoke", "--threads", "1",
            "--simulated-windows", "8")
    metadata = read_metadata(out)
    assert metadata["model_version"] == "0.0.1-smoke"
    assert metadata["training"]["excluded_cycles"] == 3
    assert metadata["training"]["uci_cycles"] == 96
    assert metadata["training"]["seed"] == 3
    assert metadata["training"]["simulated_topologies"] == ["excavator", "press", "crane"]
    assert set(metadata["normalisation"]["mean"]) >= {"pressure", "temperature", "flow"}
    checkpoint = load_checkpoint(out)
    assert checkpoint.model.num_parameters() > 10_000
    out.write_bytes(out.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=str(out.name)):
        load_checkpoint(out)


def test_evaluate_smoke_writes_the_report(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    run_cli("evaluate", "--data", str(data_dir), "--out", str(out), "--epochs", "1", "--max-folds", "1",
            "--jobs", "1", "--splits", "combination_heldout_5fold", "--simulated-windows", "16")
    report = json.loads((out / "report.json").read_text())
    split = report["splits"]["combination_heldout_5fold"]
    assert split["folds"] == 1 and split["cycles_tested"] > 300
    for name in ("cooler", "valve", "pump", "accumulator"):
        target = split["targets"][name]
        assert 0.0 <= target["accuracy"] <= 1.0 and 0.0 <= target["baseline_rf_accuracy"] <= 1.0
        assert sum(map(sum, target["confusion"])) == split["cycles_tested"]
        assert target["fold_accuracy"] == [target["accuracy"]]  # one fold: its accuracy is the split's
    assert "Combination-held-out" in (out / "REPORT.md").read_text()
    assert "worst fold - best fold" in (out / "REPORT.md").read_text()
    held_out = report["universality"]
    assert held_out["holdout_topology"] == "crane" and set(held_out["per_type_f1"]) >= {"cavitation", "leakage"}
    assert held_out["uci_cycles"] == 2205  # the held-out-topology model learns every UCI cycle too
    assert 0.0 <= held_out["macro_f1"] <= 1.0
    assert set(held_out["recall_by_severity"]) == {"0.1-0.4", "0.4-0.7", "0.7-1.0"}
    reference = held_out["seen_topology_reference"]
    assert reference["topology"] == "excavator" and held_out["windows"] == reference["windows"] == 500
    assert "a machine it was trained on" in (out / "REPORT.md").read_text()
    forest = reference["random_forest"]
    assert forest["windows"] == 500 and 0.0 <= forest["macro_f1"] <= 1.0
    assert "How separable" in (out / "REPORT.md").read_text()
    # An interrupted evaluation resumes: every fold and the universality result are cached.
    cached = json.loads(next((out / ".folds").glob("universality-crane-*.json")).read_text())
    assert cached == held_out
    assert (out / "combination_heldout_5fold_confusion.png").stat().st_size > 1000



def test_evaluate_simulated_only_trains_the_held_out_topology_model_without_uci(data_dir: Path,
                                                                              tmp_path: Path) -> None:
    out = tmp_path / "sim-only"
    args = ("evaluate", "--data", str(data_dir), "--out", str(out), "--epochs", "1", "--jobs", "1",
            "--simulated-windows", "16", "--simulated-only", "--topology-variants", "2")
    refused = subprocess.run([sys.executable, "-m", "hydrodiag.cli", *args], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--simulated-only" in refused.stderr  # the UCI splits need UCI cycles
    run_cli(*args, "--splits", "")
    report = json.loads((out / "report.json").read_text())
    assert report["splits"] == {} and report["universality"]["uci_cycles"] == 0
    assert report["config"]["recipe"]["topology_variants"] == 2  # two machine models per training topology
    assert "simulated machines alone" in (out / "REPORT.md").read_text()
    # Its cache never stands in for the same recipe trained with UCI.
    assert [p.name.endswith("-simulated-only.json") for p in (out / ".folds").glob("universality-*")] == [True]


def test_ceiling_scores_trees_on_the_evaluation_folds(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ceiling.json"
    run_cli("ceiling", "--data", str(data_dir), "--targets", "pump", "--max-folds", "1", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["split"] == "combination_heldout_5fold" and result["folds"] == 1
    pump = result["targets"]["pump"]
    assert len(pump["fold_accuracy"]) == 1 and pump["accuracy"] == pump["fold_accuracy"][0]
    assert pump["accuracy"] > 0.9  # pump leakage is plain in the raw flow and pressure values
    bad = subprocess.run([sys.executable, "-m", "hydrodiag.cli", "ceiling", "--data", str(data_dir),
                          "--targets", "pump,gearbox"], capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and "--targets" in bad.stderr and "gearbox" in bad.stderr

def test_sensor_dropout_cuts_off_sensors_only() -> None:
    import torch
    from torch_geometric.data import Batch

    from hydrodiag.features.graph import NODE_COMPONENT, build_graph, build_layout
    from hydrodiag.features.window import NormStats
    from hydrodiag.topology.templates import TopologyRegistry
    from hydrodiag.training.train import without_some_sensors

    topology = TopologyRegistry().get("uci_test_rig")
    names = [s.name for s in topology.sensors]
    layout = build_layout(topology, names)
    norm = NormStats.fit({q: [np.ones(60)] for q in layout.sensor_quantities})
    batch = Batch.from_data_list([build_graph(layout, np.ones((len(names), 60)), norm) for _ in range(8)])
    generator = torch.Generator().manual_seed(0)
    assert without_some_sensors(batch, 0.0, generator) is None

    edge_index, edge_attr = without_some_sensors(batch, 0.5, generator)  # type: ignore[misc]
    assert edge_attr.shape[0] == edge_index.shape[1]
    is_component = batch.node_kind == NODE_COMPONENT
    def between_components(edges: torch.Tensor) -> int:
        return int((is_component[edges[0]] & is_component[edges[1]]).sum())
    assert between_components(edge_index) == between_components(batch.edge_index)  # the machine stays whole
    sensors_heard = set(edge_index[0][~is_component[edge_index[0]]].tolist())
    all_sensors = set(torch.nonzero(~is_component).squeeze(1).tolist())
    assert 0.3 < 1 - len(sensors_heard) / len(all_sensors) < 0.7  # about half of the sensors are cut off
    for node in all_sensors - sensors_heard:  # a dropped sensor neither sends nor receives
        assert node not in edge_index[1].tolist()


def test_anomaly_balance_weights_rare_types_up_to_the_cap_and_leaves_common_ones() -> None:
    import torch
    from torch_geometric.data import Batch, Data

    from hydrodiag.model.gnn import ModelOutput
    from hydrodiag.training.train import anomaly_weights, diagnosis_loss

    def graph(present: list[int]) -> Data:
        labels = torch.zeros(1, 9)
        labels[0, present] = 1.0
        mask = torch.ones(1, 9)
        mask[0, 8] = 0.0  # type 8 is never labelled (masked out)
        return Data(y_component_anomalies=labels.repeat(2, 1), m_component_anomalies=mask.repeat(2, 1),
                    y_system_anomalies=labels, m_system_anomalies=mask)

    # Type 0 present in half the graphs, type 1 in one of 100, type 2 never, the others absent.
    graphs = [graph([0, 1] if i == 0 else [0] if i % 2 else []) for i in range(100)]
    assert anomaly_weights(graphs, 1.0) is None  # 1 = plain BCE, no weights at all
    weights = anomaly_weights(graphs, 20.0)
    assert weights is not None
    assert weights.system[0].item() == pytest.approx(1.0, abs=0.05)  # common: absent/present about 1
    assert weights.system[1].item() == 20.0  # rare (99 absent per present): capped
    assert weights.system[2].item() == 20.0  # never present: capped, not infinite
    assert weights.system[8].item() == 1.0  # never labelled: nothing to balance
    assert torch.equal(weights.component, weights.system)  # every entry counted, per type

    batch = Batch.from_data_list([graph([1]), graph([])])
    zeros = torch.zeros(2)
    out = ModelOutput(component_health=torch.zeros(4), component_logits=torch.zeros(4, 9), system_health=zeros,
                      system_logits=torch.zeros(2, 9), component_batch=torch.tensor([0, 0, 1, 1]))
    batch.y_component_health = torch.zeros(4)
    batch.m_component_health = torch.zeros(4)
    batch.y_system_health = zeros
    batch.m_system_health = zeros
    plain, weighted = diagnosis_loss(out, batch, 1.0), diagnosis_loss(out, batch, 1.0, weights)
    assert weighted > plain  # the rare type's one positive now counts 20 times


def test_a_model_option_survives_the_checkpoint(tmp_path: Path) -> None:
    import torch

    from hydrodiag.features.window import NormStats
    from hydrodiag.model.checkpoint import Checkpoint, save_checkpoint
    from hydrodiag.model.gnn import ModelConfig, UniversalTemporalGNN

    model = UniversalTemporalGNN(ModelConfig(raw_timing=True))
    path = save_checkpoint(Checkpoint(model=model, norm=NormStats(), model_version="0.0.1"), tmp_path / "raw.ckpt")
    loaded = load_checkpoint(path)
    assert loaded.config.raw_timing and loaded.model.temporal.raw_timing is not None
    series, stats = torch.randn(4, 3, 60), torch.randn(4, 4)
    model.eval()
    assert torch.equal(loaded.model.temporal(series, stats), model.temporal(series, stats))


def test_a_simulated_pool_shows_fresh_windows_every_epoch_at_a_constant_epoch_size(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from torch_geometric.data import Data

    from hydrodiag.training.evaluate import recipe_fingerprint
    from hydrodiag.training.recipe import Recipe, build_training_set
    from hydrodiag.training.train import TrainConfig, TrainingSet, fit

    config = TrainConfig(epochs=3, batch_size=4, threads=1)
    pooled, _ = build_training_set(Recipe(train=config, simulated_windows=4, simulated_pool=12,
                                          holdout_topology="crane"), None, np.array([], dtype=np.int64))
    assert [len(pool) for pool in pooled.pools] == [12, 12] and pooled.epoch_size() == 8
    seen: list[list[int]] = []  # the graphs of each epoch fit trains on, by identity
    epoch = TrainingSet.epoch

    def recording(self: TrainingSet, index: int) -> list[Data]:
        graphs = epoch(self, index)
        seen.append([id(g) for g in graphs])
        return graphs

    monkeypatch.setattr(TrainingSet, "epoch", recording)
    fit(pooled, config)  # OneCycleLR refuses a step beyond the total it was given: epochs stay one size
    assert [len(ids) for ids in seen] == [8, 8, 8]
    assert all(not set(a) & set(b) for i, a in enumerate(seen) for b in seen[i + 1:])  # fresh every epoch
    assert set().union(*seen) == {id(g) for pool in pooled.pools for g in pool}  # 3 x 4 = the whole pool
    assert [g.source for g in pooled.epoch(0)] == ["sim:excavator"] * 4 + ["sim:press"] * 4
    assert [id(g) for g in pooled.epoch(3)] == seen[0]  # cyclic

    # Pool 0 (the default): the same simulated windows in every epoch, as without the option.
    fixed, _ = build_training_set(Recipe(train=config, simulated_windows=4, holdout_topology="crane"), None,
                                  np.array([], dtype=np.int64))
    assert [len(pool) for pool in fixed.pools] == [4, 4]
    assert [id(g) for g in fixed.epoch(0)] == [id(g) for g in fixed.epoch(1)] == [id(g) for g in fixed.epoch(5)]
    with pytest.raises(ValueError, match="simulated_pool"):
        build_training_set(Recipe(simulated_windows=4, simulated_pool=3), None, np.array([], dtype=np.int64))
    # Evaluation caches: a pool gets its own name, no pool keeps the name it had before the option.
    assert recipe_fingerprint(Recipe(simulated_windows=4, simulated_pool=12)) != recipe_fingerprint(
        Recipe(simulated_windows=4)) == recipe_fingerprint(Recipe(simulated_windows=4, simulated_pool=0))


def _kept_fold(run: Path, data: UciData, test: np.ndarray, shift: float, recipe: str = "abc") -> None:
    true_health = np.stack([t.health(data.profile[test, t.column]) for t in TARGETS], axis=1)
    FoldResult(test=test, health=true_health + shift, anomaly=np.zeros((len(test), len(TARGETS))),
               system=np.zeros((len(test), 9)), forest={t.component: data.profile[test, t.column] for t in TARGETS},
               ).save(run / ".folds" / f"combination_heldout_5fold-0-{recipe}.npz")


def test_an_ensemble_is_scored_on_the_mean_of_its_runs(data_dir: Path, tmp_path: Path) -> None:
    data = load_uci(data_dir)
    test = split_folds(data, "combination_heldout_5fold", 0)[0][1]
    # Two runs that read every health 0.2 too high and too low: each misreads the accumulator's
    # grades (spaced 0.25-0.375 apart), their mean reads every grade right.
    _kept_fold(tmp_path / "high", data, test, +0.2)
    _kept_fold(tmp_path / "low", data, test, -0.2)
    result = score_ensemble(data, [tmp_path / "high", tmp_path / "low"])
    assert result["folds"] == [1]
    ensemble, members = result["ensemble"], result["members"]
    assert ensemble["cycles_tested"] == len(test)
    assert all(v["accuracy"] == 1.0 and v["fold_accuracy"] == [1.0] for v in ensemble["targets"].values())
    assert all(m["targets"]["accumulator"]["accuracy"] < 0.9 for m in members)
    out = tmp_path / "ensemble.json"
    run_cli("ensemble", "--data", str(data_dir), "--run", str(tmp_path / "high"), "--run", str(tmp_path / "low"),
            "--out", str(out))
    assert json.loads(out.read_text())["ensemble"]["targets"]["accumulator"]["accuracy"] == 1.0
    with pytest.raises(ValueError, match="at least two"):
        score_ensemble(data, [tmp_path / "high"])
    _kept_fold(tmp_path / "low", data, test, -0.2, recipe="def")  # a second recipe in the same folder
    with pytest.raises(ValueError, match="more than one recipe"):
        score_ensemble(data, [tmp_path / "high", tmp_path / "low"])
    missing = subprocess.run([sys.executable, "-m", "hydrodiag.cli", "ensemble", "--data", str(data_dir),
                              "--run", str(tmp_path / "high"), "--run", str(tmp_path / "nothing")],
                             capture_output=True, text=True, timeout=120, check=False)
    assert missing.returncode == 2 and "no fold" in missing.stderr


def test_the_report_shows_a_fold_that_fails_behind_a_good_mean(data_dir: Path) -> None:
    from hydrodiag.training.evaluate import EvaluationConfig, split_metrics
    from hydrodiag.training.report import render_markdown

    data = load_uci(data_dir)
    folds = [test for _, test in split_folds(data, "combination_heldout_5fold", 0)]
    health = np.stack([t.health(data.profile[:, t.column]) for t in TARGETS], axis=1)
    health[folds[3], TARGETS.index(TARGET["accumulator"])] += 0.2  # fold 3 misreads the accumulator's grades
    forest = {t.component: data.profile[:, t.column] for t in TARGETS}
    result = split_metrics(EvaluationConfig(), data, folds, health, np.zeros_like(health),
                           np.zeros((data.num_cycles, 9)), forest)
    accumulator = result["targets"]["accumulator"]  # type: ignore[index]
    assert accumulator["fold_accuracy"][3] < 0.8
    assert [a for k, a in enumerate(accumulator["fold_accuracy"]) if k != 3] == [1.0] * 4
    sizes = [len(test) for test in folds]
    assert accumulator["accuracy"] == pytest.approx(np.average(accumulator["fold_accuracy"], weights=sizes))
    assert result["targets"]["pump"]["fold_accuracy"] == [1.0] * 5  # type: ignore[index]
    worst = 100 * accumulator["fold_accuracy"][3]
    markdown = render_markdown({"command": "c", "machine": "m", "duration_s": 1.0, "config": {},
                                "splits": {"combination_heldout_5fold": result}})
    assert f"| accumulator | {100 * accumulator['accuracy']:.1f} % | {worst:.1f} % - 100.0 % |" in markdown


def test_a_health_finetuning_stage_changes_the_health_heads_only_and_all_changes_every_weight() -> None:
    from dataclasses import replace

    import torch

    from hydrodiag.cli_support import recipe_from_options
    from hydrodiag.training.evaluate import recipe_fingerprint
    from hydrodiag.training.recipe import Recipe, build_training_set
    from hydrodiag.training.train import TrainConfig, TrainingSet, fit

    config = TrainConfig(epochs=2, batch_size=8, threads=1)
    pooled, _ = build_training_set(Recipe(train=config, simulated_windows=8, holdout_topology="crane"), None,
                                   np.array([], dtype=np.int64))
    # The excavator's windows stand in for the UCI cycles (the fixed graphs the last stage trains on).
    training = TrainingSet(fixed=pooled.pools[0], pools=pooled.pools[1:], per_epoch=8)
    main_stage = fit(training, config).state_dict()
    epochs_seen: list[tuple[int, int]] = []
    health = fit(training, replace(config, finetune_epochs=2, finetune_scope="health"),
                 progress=lambda epoch, total, _loss: epochs_seen.append((epoch, total))).state_dict()
    assert epochs_seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    changed = {name for name, value in health.items() if not torch.equal(value, main_stage[name])}
    assert changed and all(name.startswith(("component_health_head.", "system_health_head.")) for name in changed)
    everything = fit(training, replace(config, finetune_epochs=2, finetune_scope="all")).state_dict()
    assert not torch.equal(everything["temporal.project.0.weight"], main_stage["temporal.project.0.weight"])

    with pytest.raises(ValueError, match="fixed graphs"):  # simulated-only training has no UCI cycles to tune on
        fit(TrainingSet([], pooled.pools, 8), replace(config, finetune_epochs=1))
    with pytest.raises(ValueError, match="finetune_scope"):
        TrainConfig(finetune_scope="heads")
    # Evaluation caches: a recipe without the stage keeps the name it had before the option existed.
    shipped = recipe_from_options(epochs=120, seed=0, simulated_windows=100, simulated_pool=0,
                                  holdout_topology="crane", sensor_dropout=0.15, raw_timing=True)
    assert recipe_fingerprint(shipped) == "3f14b56e40fa"
    assert recipe_fingerprint(replace(shipped, train=replace(shipped.train, finetune_epochs=5))) != "3f14b56e40fa"
