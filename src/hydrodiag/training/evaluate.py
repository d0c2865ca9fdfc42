"""Honest evaluation on the UCI rig and on a held-out simulated topology.

Two UCI splits: shuffled stratified 10-fold (comparable with the literature, but leaky: the rig's
conditions were changed in long blocks) and combination-held-out 5-fold (GroupKFold over the 144
(cooler, valve, pump, accumulator) combinations: every test cycle has a combination never seen in
training). Each fold model is trained by the same recipe as the shipped checkpoint; the
random-forest baseline runs on the same folds.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold, StratifiedKFold

from hydrodiag.features.window import FEATURE_VERSION, SERIES_CHANNELS, STAT_FEATURES, NormStats
from hydrodiag.model.gnn import UniversalTemporalGNN
from hydrodiag.taxonomy import ANOMALY_TYPES, DEFAULT_ANOMALY_THRESHOLD
from hydrodiag.topology.schema import Topology
from hydrodiag.training.baseline import random_forest_grades
from hydrodiag.training.datasets.uci import TARGETS, UciData, uci_graphs
from hydrodiag.training.recipe import Recipe, build_training_set, simulated_batches
from hydrodiag.training.simulator import SimulatedBatch
from hydrodiag.training.train import ProgressCallback, fit, predict_graphs

SPLITS = ("shuffled_10fold", "combination_heldout_5fold")


@dataclass
class EvaluationConfig:
    recipe: Recipe = field(default_factory=Recipe)
    max_folds: int | None = None  # smoke runs evaluate only the first folds of each split
    anomaly_threshold: float = DEFAULT_ANOMALY_THRESHOLD
    universality: bool = True
    cache_dir: Path | None = None  # finished folds (and the universality result) are kept here: a rerun resumes


def recipe_fingerprint(recipe: Recipe) -> str:
    train = recipe.train.to_dict()
    if train["anomaly_balance"] == 1.0:  # the default leaves the fingerprints of earlier recipes as they were
        del train["anomaly_balance"]
    if not train["finetune_epochs"]:  # likewise without a fine-tuning stage
        for key in ("finetune_epochs", "finetune_scope", "finetune_learning_rate"):
            del train[key]
    fields: dict[str, object] = {
        "train": train, "sim": recipe.simulated_windows, "topologies": recipe.training_topologies(),
        "baseline_dropout": recipe.baseline_dropout, "features": [SERIES_CHANNELS, STAT_FEATURES, FEATURE_VERSION]}
    if recipe.topology_variants > 1:  # as the pool: only when set
        fields["variants"] = recipe.topology_variants
    if recipe.simulated_pool:  # only when set, so that caches of recipes without a pool keep their names
        fields["sim_pool"] = recipe.simulated_pool
    text = json.dumps(fields, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def split_folds(data: UciData, split: str, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    combos = data.combinations()
    index = np.arange(data.num_cycles)
    if split == "shuffled_10fold":
        return list(StratifiedKFold(10, shuffle=True, random_state=seed).split(index, combos))
    if split == "combination_heldout_5fold":
        return list(GroupKFold(5).split(index, groups=combos))
    raise ValueError(f"unknown split '{split}'")


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(probabilities[inside].mean() - labels[inside].mean())
    return float(error)


def reliability_curve(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    return [
        {"bin_low": float(edges[b]), "bin_high": float(edges[b + 1]), "count": int((which == b).sum()),
         "mean_probability": float(probabilities[which == b].mean()),
         "observed_frequency": float(labels[which == b].mean())}
        for b in range(bins) if (which == b).any()
    ]


@dataclass
class FoldResult:
    test: np.ndarray
    health: np.ndarray  # [n_test, targets]
    anomaly: np.ndarray  # [n_test, targets]
    system: np.ndarray  # [n_test, 9]
    forest: dict[str, np.ndarray]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"test": self.test, "health": self.health, "anomaly": self.anomaly, "system": self.system,
                  **{f"forest_{k}": v for k, v in self.forest.items()}}
        np.savez(path, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> FoldResult:
        with np.load(path) as data:
            forest = {k.removeprefix("forest_"): data[k] for k in data.files if k.startswith("forest_")}
            return cls(data["test"], data["health"], data["anomaly"], data["system"], forest)


def run_fold(recipe: Recipe, data: UciData, train: np.ndarray, test: np.ndarray,
             progress: ProgressCallback | None = None) -> FoldResult:
    """Train one fold model by the recipe and predict its test cycles; RF baseline on the same split."""
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    component_ids = [c.id for c in data.topology.components]
    columns = [component_ids.index(t.component) for t in TARGETS]
    training, norm = build_training_set(recipe, data, train)
    model = fit(training, recipe.train, progress)
    predicted = predict_graphs(model, uci_graphs(data, test, norm, recipe.train.model.window))
    anomaly = np.stack([predicted.component_probabilities[:, columns[j], ANOMALY_TYPES.index(t.anomaly)]
                        for j, t in enumerate(TARGETS)], axis=1)
    return FoldResult(test, predicted.component_health[:, columns], anomaly, predicted.system_probabilities,
                      random_forest_grades(data, train, test, recipe.train.seed))


def evaluate_split(config: EvaluationConfig, data: UciData, split: str, jobs: int = 1,
                   on_fold_done: Callable[[str, int, int], None] | None = None) -> dict[str, object]:
    """Out-of-fold predictions for every tested cycle; `jobs` folds train in parallel processes.

    Parallel folds run with one torch thread each: on a small machine, several single-threaded
    trainings beat one multi-threaded training whose threads spin while waiting for each other.
    """
    folds = split_folds(data, split, config.recipe.train.seed)[: config.max_folds]
    results: list[FoldResult] = []

    cache = {k: config.cache_dir / f"{split}-{k}-{recipe_fingerprint(config.recipe)}.npz"
             for k in range(len(folds))} if config.cache_dir else {}
    pending = []
    for k in range(len(folds)):
        if k in cache and cache[k].exists():
            results.append(FoldResult.load(cache[k]))
        else:
            pending.append(k)
    done = len(folds) - len(pending)

    def finish(k: int, result: FoldResult) -> None:
        nonlocal done
        results.append(result)
        if k in cache:
            result.save(cache[k])
        done += 1
        if on_fold_done:
            on_fold_done(split, done, len(folds))

    if jobs <= 1:
        for k in pending:
            finish(k, run_fold(config.recipe, data, *folds[k]))
    else:
        recipe = replace(config.recipe, train=replace(config.recipe.train, threads=1))
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(run_fold, recipe, data, *folds[k]): k for k in pending}
            for future in as_completed(futures):
                finish(futures[future], future.result())
    return split_metrics(config, data, [test for _, test in folds], *out_of_fold(data, results))


def out_of_fold(data: UciData, results: Iterable[FoldResult]) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                     dict[str, np.ndarray]]:
    """Per-cycle health, target anomaly and system probabilities, and forest grades, of every fold's
    test cycles in their place among all of the data's cycles."""
    health = np.zeros((data.num_cycles, len(TARGETS)))
    anomaly = np.zeros((data.num_cycles, len(TARGETS)))
    system = np.zeros((data.num_cycles, len(ANOMALY_TYPES)))
    forest = {t.component: np.zeros(data.num_cycles) for t in TARGETS}
    for result in results:
        health[result.test], anomaly[result.test], system[result.test] = result.health, result.anomaly, result.system
        for component, grades in result.forest.items():
            forest[component][result.test] = grades
    return health, anomaly, system, forest


def split_metrics(config: EvaluationConfig, data: UciData, fold_tests: list[np.ndarray], health: np.ndarray,
                  anomaly: np.ndarray, system: np.ndarray, forest: dict[str, np.ndarray]) -> dict[str, object]:
    """Scores of out-of-fold predictions (indexed by cycle) over the test cycles of every fold in
    `fold_tests`; accuracy also fold by fold, in that order, because a mean hides a fold that fails."""
    tested = np.concatenate(fold_tests)
    result: dict[str, object] = {"folds": len(fold_tests), "cycles_tested": len(tested), "targets": {}}
    targets: dict[str, object] = {}
    labels_all, probs_all = [], []
    for j, target in enumerate(TARGETS):
        truth = data.profile[tested, target.column]
        predicted_grade = target.nearest_grade(health[tested, j])
        correct = np.zeros(data.num_cycles, dtype=bool)
        correct[tested] = predicted_grade == truth
        true_health = target.health(truth)
        faulty = (true_health < 1.0).astype(float)
        labels_all.append(faulty)
        probs_all.append(anomaly[tested, j])
        targets[target.component] = {
            "accuracy": float((predicted_grade == truth).mean()),
            "fold_accuracy": [float(correct[test].mean()) for test in fold_tests],
            "baseline_rf_accuracy": float((forest[target.component][tested] == truth).mean()),
            "health_mae": float(np.abs(health[tested, j] - true_health).mean()),
            "grades": list(target.grades),
            "confusion": confusion(truth, predicted_grade, target.grades),
            "baseline_rf_confusion": confusion(truth, forest[target.component][tested], target.grades),
        }
    labels, probs = np.concatenate(labels_all), np.concatenate(probs_all)
    nominal = np.all([data.profile[tested, t.column] == max(t.grades) if t.component != "pump"
                      else data.profile[tested, t.column] == 0 for t in TARGETS], axis=0)
    alarms = (system[tested] >= config.anomaly_threshold).any(axis=1)
    result["targets"] = targets
    result["anomaly_ece"] = expected_calibration_error(probs, labels)
    result["reliability"] = reliability_curve(probs, labels)
    result["nominal_cycles"] = int(nominal.sum())
    result["false_alarm_rate"] = float(alarms[nominal].mean()) if nominal.any() else None
    return result


def confusion(truth: np.ndarray, predicted: np.ndarray, grades: tuple[float, ...]) -> list[list[int]]:
    return [[int(((truth == g_true) & (predicted == g_pred)).sum()) for g_pred in grades] for g_true in grades]


# Test windows per simulated machine in the universality test (prediction only, so cheap; enough
# that a per-type F1 rests on dozens of positives rather than a handful).
UNIVERSALITY_TEST_WINDOWS = 500


def evaluate_universality(config: EvaluationConfig, data: UciData | None,
                          progress: ProgressCallback | None = None) -> dict[str, object] | None:
    """Train on UCI + the other simulated machines, test on a simulated machine never seen.

    The unseen machine's sensor baselines come from a separate batch of its operating data, with no
    labels: what commissioning a new machine gives (its readings in normal service, not its faults).
    For scale, the same model is scored on new units of a machine it was trained on: the gap between
    the two is what the unseen topology costs; the reference shows how much of the simulated machines
    the recipe learned at all.
    """
    recipe = config.recipe
    if not recipe.holdout_topology or recipe.simulated_windows <= 0:
        return None
    without_uci = "" if data is not None else "-simulated-only"
    cache = (config.cache_dir / f"universality-{recipe.holdout_topology}-{UNIVERSALITY_TEST_WINDOWS}-v2-"
             f"{recipe_fingerprint(recipe)}{without_uci}.json") if config.cache_dir else None
    if cache is not None and cache.exists():
        cached: dict[str, object] = json.loads(cache.read_text(encoding="utf-8"))
        return cached
    result = _universality(config, data, progress)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(result), encoding="utf-8")
    return result


def _universality(config: EvaluationConfig, data: UciData | None,
                  progress: ProgressCallback | None) -> dict[str, object]:
    recipe = config.recipe
    assert recipe.holdout_topology is not None
    cycles = np.arange(data.num_cycles) if data is not None else np.array([], dtype=np.int64)
    training, norm = build_training_set(recipe, data, cycles)
    model = fit(training, recipe.train, progress)
    test_recipe = replace(recipe, simulated_windows=UNIVERSALITY_TEST_WINDOWS)
    ((topology, batch),) = simulated_batches(test_recipe, recipe.train.seed + 7919, [recipe.holdout_topology])
    ((_, commissioning),) = simulated_batches(test_recipe, recipe.train.seed + 4241, [recipe.holdout_topology])
    norm.add_baselines(topology.id, list(commissioning.sensor_names), np.asarray(commissioning.series))
    result: dict[str, object] = {"holdout_topology": recipe.holdout_topology, "uci_cycles": len(cycles),
                                 **detection_scores(model, norm, topology, batch, recipe, config.anomaly_threshold)}
    seen = recipe.training_topologies()[:1]
    if seen:
        ((topology, batch),) = simulated_batches(test_recipe, recipe.train.seed + 7919, seen)
        result["seen_topology_reference"] = {
            "topology": seen[0], **detection_scores(model, norm, topology, batch, recipe, config.anomaly_threshold),
            "random_forest": forest_reference(recipe, seen[0], batch)}
    return result


# Labelled windows the forest reference learns one machine from: many times the recipe's share, so
# that it shows how separable the simulated faults are, not how little data the recipe uses.
FOREST_REFERENCE_WINDOWS = 2000


def forest_reference(recipe: Recipe, topology_id: str, test: SimulatedBatch) -> dict[str, object]:
    """A per-machine random forest on window statistics, trained on FOREST_REFERENCE_WINDOWS labelled
    windows of `topology_id` and scored on `test`, the new units the model's reference is scored on."""
    from hydrodiag.training.baseline import random_forest_detections

    ((_, train),) = simulated_batches(replace(recipe, simulated_windows=FOREST_REFERENCE_WINDOWS),
                                      recipe.train.seed + 1301, [topology_id])
    detected = random_forest_detections(np.asarray(train.series), np.asarray(train.system_anomalies),
                                        np.asarray(test.series), recipe.train.seed)
    return {"training_windows": FOREST_REFERENCE_WINDOWS, **detection_metrics(test, detected)}


def detection_scores(model: UniversalTemporalGNN, norm: NormStats, topology: Topology, batch: SimulatedBatch,
                     recipe: Recipe, threshold: float) -> dict[str, object]:
    """System-level detection of the 9 types on simulated windows whose every label is known."""
    from hydrodiag.training.datasets.simulated import simulated_graphs

    predicted = predict_graphs(model, simulated_graphs(batch, topology, norm, recipe.train.model.window))
    detected = (predicted.system_probabilities >= threshold).astype(int)
    return {**detection_metrics(batch, detected),
            "system_health_mae": float(np.abs(predicted.system_health - np.asarray(batch.system_health)).mean())}


def detection_metrics(batch: SimulatedBatch, detected: np.ndarray) -> dict[str, object]:
    """Per-type F1, false alarms and recall by severity of `detected` [n, 9] against the batch's labels."""
    truth = np.asarray(batch.system_anomalies).astype(int)
    healthy = truth.sum(axis=1) == 0
    per_type = f1_score(truth, detected, average=None, zero_division=0.0)
    severity = np.asarray(batch.severities).max(axis=1)  # [n, 9]: the worst injected fault of each type
    return {
        "windows": int(truth.shape[0]),
        "healthy_windows": int(healthy.sum()),
        "macro_f1": float(np.mean(per_type)),
        "per_type_f1": {name: float(v) for name, v in zip(ANOMALY_TYPES, per_type, strict=True)},
        "false_alarm_rate": float(detected[healthy].any(axis=1).mean()) if healthy.any() else None,
        "recall_by_severity": recall_by_severity(truth, detected, severity),
    }


SEVERITY_BANDS = ((0.1, 0.4), (0.4, 0.7), (0.7, 1.01))


def recall_by_severity(truth: np.ndarray, detected: np.ndarray, severity: np.ndarray) -> dict[str, float | None]:
    """Share of the faults detected, pooled over types, by how far they have progressed."""
    bands: dict[str, float | None] = {}
    for low, high in SEVERITY_BANDS:
        inside = (truth == 1) & (severity >= low) & (severity < high)
        bands[f"{low:.1f}-{min(high, 1.0):.1f}"] = float(detected[inside].mean()) if inside.any() else None
    return bands


def summarise(splits: dict[str, dict[str, object]], universality: dict[str, object] | None) -> dict[str, object]:
    summary: dict[str, object] = {}
    for split, result in splits.items():
        targets = result["targets"]
        assert isinstance(targets, dict)
        summary[split] = {name: round(v["accuracy"], 4) for name, v in targets.items()}
        summary[f"{split}_baseline_rf"] = {name: round(v["baseline_rf_accuracy"], 4) for name, v in targets.items()}
    if universality:
        summary["holdout_topology"] = {k: universality[k] for k in ("holdout_topology", "macro_f1", "false_alarm_rate")}
    return summary
