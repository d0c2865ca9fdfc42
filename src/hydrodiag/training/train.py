"""Training loop for the UniversalTemporalGNN on labelled graphs from any mix of data sets."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from hydrodiag.features.graph import NODE_SENSOR
from hydrodiag.model.gnn import ModelConfig, ModelOutput, UniversalTemporalGNN

ProgressCallback = Callable[[int, int, float], None]  # (epoch, epochs, mean loss)

# What the last stage of `fit` trains (TrainConfig.finetune_scope): parameter-name prefixes, or all.
FINETUNE_SCOPES: dict[str, tuple[str, ...] | None] = {
    "health": ("component_health_head.", "system_health_head."),
    "all": None,
}


@dataclass
class TrainingSet:
    """What `fit` learns from: graphs shown in every epoch, plus rotating pools (one per simulated
    machine) of which each epoch takes the next `per_epoch` graphs, cyclically.

    Every epoch has the same size, so the learning-rate schedule is fixed in advance; a pool of
    exactly `per_epoch` graphs is shown whole in every epoch (the recipe without a pool).
    """

    fixed: list[Data]
    pools: list[list[Data]] = field(default_factory=list)
    per_epoch: int = 0

    def __post_init__(self) -> None:
        if self.pools and not 0 < self.per_epoch <= min(len(pool) for pool in self.pools):
            raise ValueError(f"each pool needs at least per_epoch={self.per_epoch} (> 0) graphs, "
                             f"got {[len(pool) for pool in self.pools]}")

    def epoch(self, index: int) -> list[Data]:
        """The graphs of epoch `index` (0-based): the fixed ones, then each pool's next share."""
        graphs = list(self.fixed)
        for pool in self.pools:
            start = index * self.per_epoch
            graphs += [pool[(start + i) % len(pool)] for i in range(self.per_epoch)]
        return graphs

    def epoch_size(self) -> int:
        return len(self.fixed) + self.per_epoch * len(self.pools)

    def distinct(self) -> int:
        """Graphs seen at least once over enough epochs (fixed plus every pool's)."""
        return len(self.fixed) + sum(len(pool) for pool in self.pools)


@dataclass
class TrainConfig:
    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 3e-3
    # Strong weight decay (with the model's dropout 0.3): the test that matters is a combination of
    # conditions never seen in training, and on a held-out fold 1e-4 / 0.1 let the accumulator fall
    # to 48 % on one seed (79 % with these).
    weight_decay: float = 1e-2
    seed: int = 0
    threads: int = 0
    health_weight: float = 8.0
    # Share of the last epochs whose weights are averaged into the final model (stochastic weight
    # averaging); 0 keeps the last weights. 0.25 lost 0.3-4 points on every held-out UCI target
    # (docs/MODEL_CARD.md), so it stays off.
    average_last: float = 0.0
    # Share of sensor nodes cut off from the graph in each training batch (their edges removed, as
    # if the sensor were absent), so that no diagnosis rests on a single sensor's view of one
    # combination of conditions, and a machine with a failed sensor is still read sensibly.
    sensor_dropout: float = 0.0
    # Upper bound of the weight given to a present anomaly against an absent one, per type: each type's
    # positives are weighted by its absent/present ratio in the training set, capped here (1 = plain
    # BCE). Types that only simulated machines show are present in a few windows among thousands of UCI
    # cycles that say they are absent, so unweighted they are learned as "never".
    anomaly_balance: float = 1.0
    # A last stage on the fixed graphs alone (the UCI cycles), after the main schedule: a fresh AdamW
    # whose rate falls from `finetune_learning_rate` to zero over `finetune_epochs`. It lets a model that
    # learns many simulated machines give the real rig back the accuracy their share of the training
    # takes from it. Scope "health" trains the health heads only (the anomaly probabilities, and with
    # them every simulated-machine diagnosis, stay exactly as the main stage left them); "all" trains
    # every weight. 0 epochs = no such stage.
    finetune_epochs: int = 0
    finetune_scope: str = "health"
    finetune_learning_rate: float = 1e-3
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        if self.finetune_scope not in FINETUNE_SCOPES:
            raise ValueError(f"finetune_scope must be one of {sorted(FINETUNE_SCOPES)}, got '{self.finetune_scope}'")

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["model"] = self.model.to_dict()
        return data


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


@dataclass
class AnomalyWeights:
    """Per-type weights of present anomalies in the BCE ([9] each; ones = plain BCE)."""

    component: Tensor
    system: Tensor


def anomaly_weights(graphs: Sequence[Data], cap: float) -> AnomalyWeights | None:
    """Each type's absent/present ratio among the labelled entries of `graphs`, clipped to [1, cap]."""
    if cap <= 1.0:
        return None

    def ratio(labels: Tensor, mask: Tensor) -> Tensor:
        present = (labels * mask).sum(dim=0)
        absent = ((1.0 - labels) * mask).sum(dim=0)
        return (absent / present.clamp(min=1.0)).clamp(min=1.0, max=cap)

    return AnomalyWeights(
        component=ratio(torch.cat([g.y_component_anomalies for g in graphs]),
                        torch.cat([g.m_component_anomalies for g in graphs])),
        system=ratio(torch.cat([g.y_system_anomalies for g in graphs]),
                     torch.cat([g.m_system_anomalies for g in graphs])))


def diagnosis_loss(out: ModelOutput, batch: Batch, health_weight: float,
                   weights: AnomalyWeights | None = None) -> Tensor:
    """Masked health regression + masked anomaly BCE, per component and per system."""
    comp_health = _masked_mean((out.component_health - batch.y_component_health) ** 2, batch.m_component_health)
    sys_health = _masked_mean((out.system_health - batch.y_system_health) ** 2, batch.m_system_health)
    comp_anom = _masked_mean(
        F.binary_cross_entropy_with_logits(out.component_logits, batch.y_component_anomalies, reduction="none",
                                           pos_weight=weights.component if weights else None),
        batch.m_component_anomalies,
    )
    sys_anom = _masked_mean(
        F.binary_cross_entropy_with_logits(out.system_logits, batch.y_system_anomalies, reduction="none",
                                           pos_weight=weights.system if weights else None),
        batch.m_system_anomalies,
    )
    return health_weight * (comp_health + 0.5 * sys_health) + comp_anom + 0.5 * sys_anom


def without_some_sensors(batch: Batch, share: float, generator: torch.Generator) -> tuple[Tensor, Tensor] | None:
    """Edges of the batch with `share` of its sensor nodes cut off (component nodes always stay)."""
    if share <= 0.0:
        return None
    dropped = (batch.node_kind == NODE_SENSOR) & (torch.rand(batch.num_nodes, generator=generator) < share)
    source, target = batch.edge_index
    kept = ~(dropped[source] | dropped[target])
    return batch.edge_index[:, kept], batch.edge_attr[kept]


def fit(data: TrainingSet | Sequence[Data], config: TrainConfig,
        progress: ProgressCallback | None = None) -> UniversalTemporalGNN:
    """Train a model on `data` (plain graphs: all of them in every epoch)."""
    training = data if isinstance(data, TrainingSet) else TrainingSet(list(data))
    seed_everything(config.seed)
    # Tiny gradients late in training turn into denormal floats, which are many times slower on CPU.
    torch.set_flush_denormal(True)
    if config.threads:
        torch.set_num_threads(config.threads)
    model = UniversalTemporalGNN(config.model)
    model.train()
    if config.finetune_epochs and not training.fixed:
        raise ValueError("finetune_epochs needs fixed graphs (UCI cycles) to fine-tune on")
    # One shuffling generator across epochs: the same draws as a single loader iterated again.
    generator = torch.Generator().manual_seed(config.seed)
    dropout_generator = torch.Generator().manual_seed(config.seed + 1)
    # Counted on the first epoch's graphs: a pool's share per epoch is drawn the same way every time.
    weights = anomaly_weights(training.epoch(0), config.anomaly_balance) if config.anomaly_balance > 1.0 else None
    epochs = config.epochs + config.finetune_epochs

    def run_epoch(graphs: list[Data], optimizer: torch.optim.Optimizer, scheduler: LRScheduler) -> float:
        total, count = 0.0, 0
        for batch in DataLoader(graphs, batch_size=config.batch_size, shuffle=True, generator=generator,
                                exclude_keys=["source"]):
            optimizer.zero_grad(set_to_none=True)
            edges = without_some_sensors(batch, config.sensor_dropout, dropout_generator)
            out = model.forward_batch(batch) if edges is None else model(
                batch.series, batch.stats, batch.node_kind, batch.node_type, *edges, batch.batch, int(batch.num_graphs))
            loss = diagnosis_loss(out, batch, config.health_weight, weights)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * batch.num_graphs
            count += batch.num_graphs
        return total / max(count, 1)

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps = max(1, config.epochs * math.ceil(training.epoch_size() / config.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.learning_rate, total_steps=steps,
                                                    pct_start=0.15)
    average_from = config.epochs - round(config.average_last * config.epochs)
    averaged = AveragedModel(model) if average_from < config.epochs else None
    for epoch in range(config.epochs):
        loss = run_epoch(training.epoch(epoch), optimizer, scheduler)
        if averaged is not None and epoch >= average_from:
            averaged.update_parameters(model)
        if progress:
            progress(epoch + 1, epochs, loss)
    if averaged is not None:
        # LayerNorm only (no batch statistics), so the averaged weights need no re-estimation pass.
        model.load_state_dict(averaged.module.state_dict())
    if config.finetune_epochs:
        prefixes = FINETUNE_SCOPES[config.finetune_scope]
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(prefixes is None or name.startswith(prefixes))
        tuned = [p for p in model.parameters() if p.requires_grad]
        tuner = torch.optim.AdamW(tuned, lr=config.finetune_learning_rate, weight_decay=config.weight_decay)
        falling = torch.optim.lr_scheduler.CosineAnnealingLR(
            tuner, T_max=config.finetune_epochs * math.ceil(len(training.fixed) / config.batch_size))
        for epoch in range(config.epochs, epochs):
            loss = run_epoch(training.fixed, tuner, falling)
            if progress:
                progress(epoch + 1, epochs, loss)
        model.requires_grad_(True)
    model.eval()
    return model


@dataclass
class Predictions:
    """Model outputs for graphs that share one layout: component arrays are [n, C]."""

    component_health: np.ndarray
    component_probabilities: np.ndarray  # [n, C, 9]
    system_health: np.ndarray
    system_probabilities: np.ndarray  # [n, 9]


@torch.inference_mode()
def predict_graphs(model: UniversalTemporalGNN, graphs: Sequence[Data], batch_size: int = 256) -> Predictions:
    model.eval()
    comp_h, comp_p, sys_h, sys_p = [], [], [], []
    for start in range(0, len(graphs), batch_size):
        chunk = list(graphs[start : start + batch_size])
        batch = Batch.from_data_list(chunk, exclude_keys=["source"])
        out = model.forward_batch(batch)
        n = len(chunk)
        comp_h.append(out.component_health.reshape(n, -1).numpy())
        comp_p.append(torch.sigmoid(out.component_logits).reshape(n, -1, out.component_logits.shape[1]).numpy())
        sys_h.append(out.system_health.numpy())
        sys_p.append(torch.sigmoid(out.system_logits).numpy())
    return Predictions(np.concatenate(comp_h), np.concatenate(comp_p), np.concatenate(sys_h), np.concatenate(sys_p))


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start
