"""How a checkpoint is made: which data go in, how they are normalised, what provenance is kept.

`hydrodiag train` and `hydrodiag evaluate` both build their training sets here, so a fold model
in the evaluation report is trained exactly like the shipped checkpoint.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch_geometric.data import Data

from hydrodiag.features.window import NormStats
from hydrodiag.model.checkpoint import Checkpoint
from hydrodiag.topology.schema import Topology
from hydrodiag.topology.templates import TopologyRegistry
from hydrodiag.training.datasets.simulated import add_simulated_norm_values, simulated_graphs
from hydrodiag.training.datasets.uci import UciData, add_uci_norm_values, uci_graphs
from hydrodiag.training.samples import NormValues
from hydrodiag.training.simulator import SimulatedBatch, simulate
from hydrodiag.training.simulator.variants import machine_variants
from hydrodiag.training.train import ProgressCallback, Stopwatch, TrainConfig, TrainingSet, fit

SIMULATED_TOPOLOGIES: tuple[str, ...] = ("excavator", "press", "crane")


@dataclass
class Recipe:
    """Everything that decides what a model learns from."""

    train: TrainConfig = field(default_factory=TrainConfig)
    simulated_windows: int = 0  # per simulated topology and epoch; 0 = UCI only
    # Distinct simulated windows per topology over the whole training: each epoch takes the next
    # `simulated_windows` of them (cyclically), so the model sees fresh windows at the same cost per
    # epoch. 0 = the same `simulated_windows` windows in every epoch.
    simulated_pool: int = 0
    simulated_topologies: tuple[str, ...] = SIMULATED_TOPOLOGIES
    holdout_topology: str | None = None  # a simulated topology kept out of training
    # Share of training samples shown without their machine's baselines, so that the model also
    # serves machines whose baselines are not known yet.
    baseline_dropout: float = 0.2
    # Machine models per simulated training topology (training.simulator.variants): the template and
    # variants with their own design values, sharing its simulated windows. 1 = the templates only.
    topology_variants: int = 1

    def training_topologies(self) -> list[str]:
        return [t for t in self.simulated_topologies if t != self.holdout_topology]

    def pool_windows(self) -> int:
        """Distinct simulated windows generated per training topology."""
        return (self.simulated_pool or self.simulated_windows) if self.simulated_windows > 0 else 0


def read_exclude_file(path: Path) -> set[int]:
    """Cycle indices (0-based, one per line; blank lines and # comments ignored)."""
    indices = set()
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if not text.isdigit():
            raise ValueError(f"{path}:{number}: '{text}' is not a cycle index")
        indices.add(int(text))
    return indices


def simulated_batches(recipe: Recipe, seed: int,
                      topologies: list[str] | None = None) -> list[tuple[Topology, SimulatedBatch]]:
    """(topology, SimulatedBatch) pairs for the recipe's simulated training data."""
    if recipe.simulated_windows <= 0:
        return []
    registry = TopologyRegistry()
    pairs = []
    for offset, topology_id in enumerate(topologies or recipe.training_topologies()):
        topology = registry.get(topology_id)
        pairs.append((topology, simulate(topology, recipe.simulated_windows, seed=seed * 1000 + offset)))
    return pairs


def training_batches(recipe: Recipe, seed: int) -> list[tuple[Topology, SimulatedBatch]]:
    """The recipe's simulated training pools: per training topology, one per machine variant (the
    template alone without variants), each with an equal share of the topology's windows."""
    variants = recipe.topology_variants
    if variants > min(100, max(1, recipe.simulated_windows)):
        raise ValueError(f"topology_variants ({variants}) must lie in 1..100 and not exceed "
                         f"simulated_windows ({recipe.simulated_windows})")
    if recipe.simulated_windows <= 0:
        return []
    registry = TopologyRegistry()
    share = recipe.pool_windows() // variants
    pairs = []
    for offset, topology_id in enumerate(recipe.training_topologies()):
        for k, variant in enumerate(machine_variants(registry.get(topology_id), variants, seed=seed * 1000 + offset)):
            # Variant 0 is the template with the seed `simulated_batches` gives it.
            pairs.append((variant, simulate(variant, share, seed=seed * 1000 + offset + 10 * k)))
    return pairs


def build_training_set(recipe: Recipe, uci: UciData | None, cycles: np.ndarray) -> tuple[TrainingSet, NormStats]:
    """Labelled graphs of UCI `cycles` (in every epoch) plus a pool of simulated windows per training
    topology (each epoch takes the next `simulated_windows` of it), and their normalisation, fitted
    on all of them."""
    if recipe.simulated_pool and recipe.simulated_pool < recipe.simulated_windows:
        raise ValueError(f"simulated_pool ({recipe.simulated_pool}) must be 0 or at least simulated_windows "
                         f"({recipe.simulated_windows})")
    values = NormValues.empty()
    if uci is not None and len(cycles):
        add_uci_norm_values(values, uci, cycles)
    sims = training_batches(recipe, recipe.train.seed)
    for topology, batch in sims:
        add_simulated_norm_values(values, batch, topology)
    norm = values.fit()
    window = recipe.train.model.window
    rng = np.random.default_rng(recipe.train.seed + 17)

    def dropped(n: int) -> np.ndarray:
        return rng.random(n) < recipe.baseline_dropout

    fixed: list[Data] = []
    if uci is not None and len(cycles):
        fixed = uci_graphs(uci, cycles, norm, window, dropped(len(cycles)))
    pools = [simulated_graphs(batch, topology, norm, window, dropped(len(batch.system_health)))
             for topology, batch in sims]
    # Machine variants exist only in training (their graphs are encoded above); a checkpoint keeps
    # the baselines of the machines users can name, not 100 invented ones per template.
    variant_ids = {topology.id for topology, _ in sims} - set(recipe.training_topologies())
    per_epoch = recipe.simulated_windows // recipe.topology_variants if pools else 0
    return TrainingSet(fixed, pools, per_epoch), norm.without_machines(variant_ids)


def git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def train_checkpoint(recipe: Recipe, uci: UciData | None, cycles: np.ndarray, model_version: str,
                     data_label: str, excluded: int = 0, progress: ProgressCallback | None = None) -> Checkpoint:
    watch = Stopwatch()
    training_set, norm = build_training_set(recipe, uci, cycles)
    model = fit(training_set, recipe.train, progress)
    training: dict[str, object] = {
        "data": data_label,
        "uci_cycles": len(cycles),
        "excluded_cycles": excluded,
        "simulated_windows_per_topology": recipe.simulated_windows,
        "simulated_topologies": recipe.training_topologies() if recipe.simulated_windows else [],
        "holdout_topology": recipe.holdout_topology,
        "baseline_dropout": recipe.baseline_dropout,
        "graphs": training_set.epoch_size(),  # per epoch
        "config": recipe.train.to_dict(),
        "seed": recipe.train.seed,
        "duration_s": round(watch.seconds(), 1),
        "git_commit": git_commit(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if recipe.topology_variants > 1:
        training["topology_variants"] = recipe.topology_variants
    if recipe.simulated_pool:
        training["simulated_pool_per_topology"] = recipe.simulated_pool
        training["distinct_graphs"] = training_set.distinct()
    return Checkpoint(model=model, norm=norm, model_version=model_version, training=training)
