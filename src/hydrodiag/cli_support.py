"""What the CLI commands do beyond parsing: progress bars, file handling, console output."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hydrodiag.model.checkpoint import save_checkpoint
from hydrodiag.model.gnn import ModelConfig
from hydrodiag.training.datasets.uci import load_uci
from hydrodiag.training.recipe import Recipe, read_exclude_file, train_checkpoint
from hydrodiag.training.train import ProgressCallback, TrainConfig

console = Console(stderr=True)


def progress_bar() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console)


def epoch_callback(progress: Progress, description: str, epochs: int) -> ProgressCallback:
    task = progress.add_task(description, total=epochs, status="")

    def update(epoch: int, total: int, loss: float) -> None:
        progress.update(task, completed=epoch, status=f"loss {loss:.4f}")
        if not console.is_terminal and (epoch % 10 == 0 or epoch == total):
            # Logs of non-interactive runs (CI, nohup) still show how far training got.
            console.print(f"{description}: epoch {epoch}/{total} loss {loss:.4f}")

    return update


def recipe_from_options(*, epochs: int, seed: int, simulated_windows: int, simulated_pool: int,
                        holdout_topology: str | None, threads: int = 0, average_last: float = 0.0,
                        sensor_dropout: float = 0.0, raw_timing: bool = False, anomaly_balance: float = 1.0,
                        topology_variants: int = 1, finetune_epochs: int = 0, finetune_scope: str = "health",
                        finetune_learning_rate: float = 1e-3) -> Recipe:
    """The recipe `train` and `evaluate` share: one place, so an evaluated recipe is the trained one."""
    return Recipe(train=TrainConfig(epochs=epochs, seed=seed, threads=threads, average_last=average_last,
                                    sensor_dropout=sensor_dropout, anomaly_balance=anomaly_balance,
                                    finetune_epochs=finetune_epochs, finetune_scope=finetune_scope,
                                    finetune_learning_rate=finetune_learning_rate,
                                    model=ModelConfig(raw_timing=raw_timing)),
                  simulated_windows=simulated_windows, simulated_pool=simulated_pool,
                  holdout_topology=holdout_topology, topology_variants=topology_variants)


def run_training(*, data: Path, out: Path, recipe: Recipe, exclude: Path | None, model_version: str,
                 metrics: Path | None, limit_cycles: int) -> None:
    uci = load_uci(data)
    excluded = read_exclude_file(exclude) if exclude else set()
    cycles = np.array([i for i in range(uci.num_cycles) if i not in excluded], dtype=np.int64)
    if limit_cycles:
        cycles = cycles[:limit_cycles]
    epochs = recipe.train.epochs
    with progress_bar() as progress:
        checkpoint = train_checkpoint(recipe, uci, cycles, model_version, data_label=Path(data).name,
                                      excluded=len(excluded), progress=epoch_callback(progress, "training", epochs))
    if metrics:
        checkpoint.metrics = json.loads(Path(metrics).read_text(encoding="utf-8")).get("summary", {})
    save_checkpoint(checkpoint, out)
    console.print(f"wrote {out} (model version {model_version}, {checkpoint.model.num_parameters()} parameters, "
                  f"{checkpoint.training['duration_s']} s)")


def run_evaluation(*, data: Path, out: Path, recipe: Recipe, max_folds: int | None, splits: list[str], jobs: int,
                   attach_to: Path | None = None, merge: bool = False, universality: bool = True,
                   simulated_only: bool = False) -> None:
    import platform
    import sys

    import torch

    from hydrodiag.training.evaluate import (
        EvaluationConfig,
        evaluate_split,
        evaluate_universality,
        split_folds,
        summarise,
    )
    from hydrodiag.training.report import write_report
    from hydrodiag.training.train import Stopwatch

    watch = Stopwatch()
    uci = load_uci(data)
    # One torch thread per training process: on a small machine several single-threaded trainings
    # beat multi-threaded ones whose threads spin while waiting for each other.
    recipe = replace(recipe, train=replace(recipe.train, threads=1))
    epochs, seed = recipe.train.epochs, recipe.train.seed
    simulated_windows, holdout_topology = recipe.simulated_windows, recipe.holdout_topology
    config = EvaluationConfig(recipe=recipe, max_folds=max_folds, cache_dir=out / ".folds")
    results = {}
    with progress_bar() as progress:
        tasks = {split: progress.add_task(split, total=len(split_folds(uci, split, seed)[:max_folds]), status="folds")
                 for split in splits}

        def fold_done(split: str, done: int, folds: int) -> None:
            progress.update(tasks[split], completed=done)
            if not console.is_terminal:
                console.print(f"{split}: {done}/{folds} folds done after {watch.seconds():.0f} s")

        for split in splits:
            results[split] = evaluate_split(config, uci, split, jobs, fold_done)
        held_out = None
        if universality and holdout_topology and simulated_windows:
            held_out = evaluate_universality(config, None if simulated_only else uci,
                                             epoch_callback(progress, "held-out topology", epochs))
    existing = out / "report.json"
    previous = json.loads(existing.read_text(encoding="utf-8")) if merge and existing.exists() else {}
    # A report may be assembled from several runs (e.g. one per split); each run's command is kept.
    results = {**previous.get("splits", {}), **results}
    held_out = held_out or previous.get("universality")
    command = shlex.join(["hydrodiag", "evaluate", *sys.argv[2:]])
    report = {
        "command": " && ".join([*previous.get("commands", []), command]) if previous else command,
        "commands": [*previous.get("commands", []), command],
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.python_version()}",
        "duration_s": previous.get("duration_s", 0.0) + watch.seconds(),
        "config": {"recipe": {"train": recipe.train.to_dict(), "simulated_windows": simulated_windows,
                              "simulated_pool": recipe.simulated_pool, "holdout_topology": holdout_topology,
                              "topology_variants": recipe.topology_variants, "uci_in_universality": not simulated_only},
                   "max_folds": max_folds, "jobs": jobs},
        "splits": results,
        "universality": held_out,
        "summary": summarise(results, held_out),
    }
    for path in write_report(report, out):
        console.print(f"wrote {path}")
    console.print_json(data=report["summary"])
    if attach_to:
        attach_metrics(attach_to, report["summary"], out)


def attach_metrics(checkpoint_path: Path, summary: dict[str, object], report_dir: Path) -> None:
    """Store an evaluation summary in a checkpoint's metadata (weights untouched)."""
    from hydrodiag.model.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(checkpoint_path)
    checkpoint.metrics = {**checkpoint.metrics, **summary, "report": str(report_dir / "REPORT.md")}
    save_checkpoint(checkpoint, checkpoint_path)
    console.print(f"stored the evaluation summary in {checkpoint_path}")


def _write_result(result: dict[str, object], out: Path | None) -> None:
    """A command's result as indented JSON, when --out names a file."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {out}")


def run_ceiling(*, data: Path, split: str, targets: list[str], seed: int, out: Path | None,
                max_folds: int | None = None) -> dict[str, object]:
    """Gradient-boosted trees on raw values and differences, scored per fold like `evaluate`."""
    import sys

    from rich.table import Table

    from hydrodiag.training.baseline import gradient_boosting_grades
    from hydrodiag.training.datasets.uci import TARGETS
    from hydrodiag.training.evaluate import split_folds

    by_name = {t.component: t for t in TARGETS}
    unknown = [name for name in targets if name not in by_name]
    if unknown:
        raise ValueError(f"--targets: unknown target(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    chosen = tuple(by_name[name] for name in targets)
    uci = load_uci(data)
    folds = split_folds(uci, split, seed)[:max_folds]
    tested = np.concatenate([test for _, test in folds])
    predicted = {t.component: np.zeros(uci.num_cycles) for t in chosen}
    per_fold: dict[str, list[float]] = {t.component: [] for t in chosen}
    with progress_bar() as progress:
        task = progress.add_task(split, total=len(folds), status="folds")
        for train, test in folds:
            grades = gradient_boosting_grades(uci, train, test, chosen, seed)
            for target in chosen:
                predicted[target.component][test] = grades[target.component]
                per_fold[target.component].append(float((grades[target.component] ==
                                                         uci.profile[test, target.column]).mean()))
            progress.advance(task)
    result: dict[str, object] = {
        "command": shlex.join(["hydrodiag", "ceiling", *sys.argv[2:]]),
        "model": "HistGradientBoostingClassifier(max_iter=200) on every sensor's values and first differences",
        "split": split,
        "folds": len(folds),
        "targets": {t.component: {"accuracy": float((predicted[t.component][tested] ==
                                                    uci.profile[tested, t.column]).mean()),
                                  "fold_accuracy": per_fold[t.component]} for t in chosen},
    }
    table = Table("target", "accuracy", *[f"fold {k + 1}" for k in range(len(folds))], title=split)
    for name, scores in result["targets"].items():  # type: ignore[attr-defined]
        table.add_row(name, f"{100 * scores['accuracy']:.1f} %", *[f"{100 * a:.1f}" for a in scores["fold_accuracy"]])
    console.print(table)
    _write_result(result, out)
    return result


def run_ensemble(*, data: Path, runs: list[Path], split: str, out: Path | None) -> dict[str, object]:
    import sys

    from rich.table import Table

    from hydrodiag.training.ensemble import score_ensemble

    result = {"command": shlex.join(["hydrodiag", "ensemble", *sys.argv[2:]]),
              **score_ensemble(load_uci(data), runs, split)}
    ensemble: dict[str, Any] = result["ensemble"]  # type: ignore[assignment]
    members: list[dict[str, Any]] = result["members"]  # type: ignore[assignment]
    table = Table("target", "mean of the runs", *[f"run {i + 1}" for i in range(len(members))],
                  title=f"{split}, folds {result['folds']}")
    for name, scores in ensemble["targets"].items():
        table.add_row(name, f"{100 * scores['accuracy']:.2f} %",
                      *[f"{100 * m['targets'][name]['accuracy']:.2f} %" for m in members])
    console.print(table)
    _write_result(result, out)
    return result


def run_separability(*, topology: str, units: int, test_units: int, commissioning_windows: int, windows_per_unit: int,
                     seed: int, out: Path | None, model: str = "forest",
                     readings: tuple[str, ...] = ("fleet", "own unit", "both")) -> dict[str, object]:
    import sys

    from rich.table import Table

    from hydrodiag.taxonomy import ANOMALY_TYPES
    from hydrodiag.topology.templates import TopologyRegistry
    from hydrodiag.training.separability import separability

    machine = TopologyRegistry().get(topology, "--topology")
    with console.status(f"simulating {units + test_units} units of {topology} and fitting {model} "
                        f"for {len(readings)} reading(s)"):
        result = separability(machine, train_units=units, test_units=test_units,
                              commissioning_windows=commissioning_windows, windows_per_unit=windows_per_unit,
                              seed=seed, model=model, chosen=readings)
    result = {"command": shlex.join(["hydrodiag", "separability", *sys.argv[2:]]), **result}
    scores: dict[str, Any] = result["readings"]  # type: ignore[assignment]
    table = Table("", *scores, title=f"{topology}: {model} on {units} units, scored on {test_units} new ones")
    table.add_row("macro-F1", *[f"{r['macro_f1']:.3f}" for r in scores.values()])
    table.add_row("false alarms", *[f"{100 * r['false_alarm_rate']:.1f} %" for r in scores.values()])
    for name in ANOMALY_TYPES:
        table.add_row(f"F1 {name}", *[f"{r['per_type_f1'][name]:.2f}" for r in scores.values()])
    console.print(table)
    _write_result(result, out)
    return result
