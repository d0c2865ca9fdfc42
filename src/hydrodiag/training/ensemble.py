"""What averaging several models would give: a seed ensemble scored from `hydrodiag evaluate` runs.

Each `hydrodiag evaluate --out DIR` keeps every finished fold's out-of-fold predictions under
`DIR/.folds/`. Runs of one recipe with different seeds test the same cycles on the
combination-held-out split (its folds do not depend on the seed), so the mean of their predicted
health, per cycle, is what an ensemble of their fold models would predict. This scores that mean
exactly like `evaluate` scores one model, next to each member, without training anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hydrodiag.training.datasets.uci import UciData
from hydrodiag.training.evaluate import EvaluationConfig, FoldResult, out_of_fold, split_folds, split_metrics


def cached_folds(run: Path, split: str) -> dict[int, FoldResult]:
    """Fold index -> the fold's out-of-fold predictions kept by `evaluate --out run`."""
    found: dict[int, list[Path]] = {}
    for path in sorted((run / ".folds").glob(f"{split}-*-*.npz")):
        fold = path.name.removeprefix(f"{split}-").split("-", 1)[0]
        if fold.isdigit():
            found.setdefault(int(fold), []).append(path)
    mixed = sorted(k for k, paths in found.items() if len(paths) > 1)
    if mixed:
        raise ValueError(f"{run}: folds {mixed} of {split} were kept for more than one recipe; "
                         "give each recipe its own --out")
    return {k: FoldResult.load(paths[0]) for k, paths in found.items()}


def score_ensemble(data: UciData, runs: list[Path], split: str = "combination_heldout_5fold",
                   config: EvaluationConfig | None = None) -> dict[str, object]:
    """`evaluate`'s metrics of the members' mean prediction and of every member, on the folds all
    runs finished (the random-forest columns come from the first run: every run has the same)."""
    if len(runs) < 2:
        raise ValueError("an ensemble needs at least two runs")
    config = config or EvaluationConfig()
    members = [cached_folds(run, split) for run in runs]
    shared = sorted(set.intersection(*(set(folds) for folds in members)))
    if not shared:
        raise ValueError(f"no fold of {split} is finished in every run ({', '.join(map(str, runs))})")
    members = [{k: folds[k] for k in shared} for folds in members]
    every_fold = split_folds(data, split, config.recipe.train.seed)
    fold_tests = [every_fold[k][1] for k in shared]
    for run, folds in zip(runs, members, strict=True):
        if any(not np.array_equal(folds[k].test, every_fold[k][1]) for k in shared):
            raise ValueError(f"{run}: its {split} folds test other cycles than this data's folds")
    predictions = [out_of_fold(data, folds.values()) for folds in members]
    forest = predictions[0][3]
    health = np.mean([p[0] for p in predictions], axis=0)
    anomaly = np.mean([p[1] for p in predictions], axis=0)
    system = np.mean([p[2] for p in predictions], axis=0)
    return {
        "split": split,
        "folds": [k + 1 for k in shared],
        "runs": [str(run) for run in runs],
        "ensemble": split_metrics(config, data, fold_tests, health, anomaly, system, forest),
        "members": [split_metrics(config, data, fold_tests, p[0], p[1], p[2], forest) for p in predictions],
    }
