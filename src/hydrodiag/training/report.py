"""Evaluation report files: JSON (everything), markdown (the tables users read), PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI
import matplotlib.pyplot as plt
import numpy as np

SPLIT_TITLES = {
    "shuffled_10fold": "Shuffled stratified 10-fold (leaky, for comparison with the literature)",
    "combination_heldout_5fold": "Combination-held-out 5-fold (every test combination unseen in training)",
}


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _fold_range(fold_accuracy: list[float] | None) -> str:
    """Reports written before per-fold accuracy was kept have none to show."""
    if not fold_accuracy:
        return "n/a"
    return f"{_percent(min(fold_accuracy))} - {_percent(max(fold_accuracy))}"


def _bands(recall: dict[str, float | None]) -> str:
    return ", ".join(f"{band}: {_percent(value)}" for band, value in recall.items())


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# hydrodiag evaluation report", "",
             f"Produced by `{report['command']}` on {report['machine']}; this invocation took "
             f"{report['duration_s']:.0f} s (folds and the universality result found in `.folds/`, the cache of "
             "earlier invocations of the same recipe, are reused, not retrained).", "",
             "Accuracy = share of test cycles whose grade is recovered from the predicted component health "
             "(nearest grade under the label mapping). RF = random forest on 7 statistics of each sensor, "
             "same folds.", ""]
    for split, result in report["splits"].items():
        lines += [f"## {SPLIT_TITLES.get(split, split)}", "",
                  f"{result['folds']} folds, {result['cycles_tested']} test cycles.", "",
                  "| target | hydrodiag | worst fold - best fold | RF baseline | difference | health MAE |",
                  "|---|---|---|---|---|---|"]
        for name, t in result["targets"].items():
            diff = t["accuracy"] - t["baseline_rf_accuracy"]
            lines.append(f"| {name} | {_percent(t['accuracy'])} | {_fold_range(t.get('fold_accuracy'))} | "
                         f"{_percent(t['baseline_rf_accuracy'])} | {100 * diff:+.1f} pt | {t['health_mae']:.3f} |")
        lines += ["", f"- Expected calibration error of the anomaly probabilities: {result['anomaly_ece']:.3f}",
                  f"- False-alarm rate on the {result['nominal_cycles']} cycles with all four components nominal: "
                  f"{_percent(result['false_alarm_rate'])}",
                  f"- Plots: `{split}_confusion.png`, `{split}_reliability.png`", ""]
    universality = report.get("universality")
    if universality:
        reference = universality.get("seen_topology_reference")
        lines += [f"## Held-out simulated topology: {universality['holdout_topology']}", "",
                  f"Trained on {_universality_training(universality)}; {universality['windows']} test windows "
                  f"({universality['healthy_windows']} healthy).", "",
                  f"- Macro-F1 over the 9 anomaly types: {universality['macro_f1']:.3f}",
                  f"- False-alarm rate on healthy windows: {_percent(universality['false_alarm_rate'])}",
                  f"- System health MAE: {universality['system_health_mae']:.3f}"]
        lines.append(f"- Faults detected by severity (pooled over types): {_bands(universality['recall_by_severity'])}")
        if reference:
            lines += [f"- For scale, the same model on {reference['windows']} windows of new units of "
                      f"`{reference['topology']}`, a machine it was trained on: macro-F1 {reference['macro_f1']:.3f}, "
                      f"false alarms {_percent(reference['false_alarm_rate'])}, system health MAE "
                      f"{reference['system_health_mae']:.3f}, faults detected by severity "
                      f"{_bands(reference['recall_by_severity'])}", "",
                      "| anomaly type | F1, held-out machine | F1, trained machine |", "|---|---|---|"]
            lines += [f"| {k} | {v:.3f} | {reference['per_type_f1'][k]:.3f} |"
                      for k, v in universality["per_type_f1"].items()]
            forest = reference.get("random_forest")
            if forest:
                lines += ["", f"How separable the simulated faults are: a random forest on window statistics, trained "
                          f"on {forest['training_windows']} labelled windows of `{reference['topology']}` alone and "
                          f"tested on the same new units, reaches macro-F1 {forest['macro_f1']:.3f} (false alarms "
                          f"{_percent(forest['false_alarm_rate'])}; faults detected by severity "
                          f"{_bands(forest['recall_by_severity'])}); per type: "
                          + ", ".join(f"{k} {v:.2f}" for k, v in forest["per_type_f1"].items()) + "."]
        else:
            lines += ["", "| anomaly type | F1 |", "|---|---|"]
            lines += [f"| {k} | {v:.3f} |" for k, v in universality["per_type_f1"].items()]
        lines.append("")
    lines += ["## Configuration", "", "```json", json.dumps(report["config"], indent=2), "```", ""]
    return "\n".join(lines)


def plot_confusions(result: dict[str, Any], path: Path, title: str) -> None:
    targets = result["targets"]
    fig, axes = plt.subplots(2, len(targets), figsize=(4 * len(targets), 7.5))
    for col, (name, t) in enumerate(targets.items()):
        for row, (key, who) in enumerate((("confusion", "hydrodiag"), ("baseline_rf_confusion", "RF baseline"))):
            ax = axes[row][col]
            matrix = np.array(t[key], dtype=float)
            ax.imshow(matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
            labels = [f"{g:g}" for g in t["grades"]]
            ax.set_xticks(range(len(labels)), labels)
            ax.set_yticks(range(len(labels)), labels)
            for (i, j), value in np.ndenumerate(matrix):
                ax.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=8)
            ax.set_title(f"{name} - {who}")
            ax.set_xlabel("predicted grade")
            ax.set_ylabel("true grade")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_reliability(result: dict[str, Any], path: Path, title: str) -> None:
    curve = result["reliability"]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.plot([b["mean_probability"] for b in curve], [b["observed_frequency"] for b in curve], "o-",
            label=f"hydrodiag (ECE {result['anomaly_ece']:.3f})")
    ax.set_xlabel("predicted anomaly probability")
    ax.set_ylabel("observed frequency")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "report.json", out_dir / "REPORT.md"]
    written[0].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    written[1].write_text(render_markdown(report), encoding="utf-8")
    for split, result in report["splits"].items():
        for suffix, plot in (("confusion", plot_confusions), ("reliability", plot_reliability)):
            path = out_dir / f"{split}_{suffix}.png"
            plot(result, path, SPLIT_TITLES.get(split, split))
            written.append(path)
    return written


def _universality_training(universality: dict[str, object]) -> str:
    # Results cached before the count was kept were all trained with every UCI cycle.
    if universality.get("uci_cycles", 1):
        return "UCI plus the other simulated machines"
    return "the other simulated machines alone (no UCI cycles, `--simulated-only`)"
