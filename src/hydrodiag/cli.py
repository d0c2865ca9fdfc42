"""Command line: serve / train / evaluate / ceiling / ensemble / separability / simulate / commission.

Each command only parses options and calls into the layer that owns the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="hydrodiag: diagnose hydraulic machines with a temporal graph neural network.",
                  no_args_is_help=True, add_completion=False)


# Options of the training recipe, shared by `train` and `evaluate` (and `ceiling` for --data).
UciData = Annotated[Path, typer.Option("--data", help="UCI data folder (../shared/data/uci_hydraulic_1hz).")]
Epochs = Annotated[int, typer.Option(min=1, help="Training epochs (of every fold model, in evaluate).")]
SimulatedPool = Annotated[int, typer.Option(min=0, help="Distinct simulated windows per topology over the whole "
                                            "training; each epoch takes the next --simulated-windows of them "
                                            "(0 = the same windows in every epoch).")]
AverageLast = Annotated[float, typer.Option(min=0.0, max=1.0,
                                            help="Average the weights of this share of the last epochs (SWA).")]
SensorDropout = Annotated[float, typer.Option(min=0.0, max=0.9,
                                              help="Share of sensors hidden from each training sample.")]
AnomalyBalance = Annotated[float, typer.Option(
    min=1.0, help="Cap of the weight of a present anomaly type against an absent one (1 = unweighted).")]
TopologyVariants = Annotated[int, typer.Option(
    min=1, max=100, help="Machine models per simulated training topology: the template and variants with their own "
                         "design values, sharing its windows (1 = the templates only).")]
FinetuneEpochs = Annotated[int, typer.Option(
    min=0, help="A last stage of this many epochs on the UCI cycles alone, at a falling rate (0 = none).")]
FinetuneScope = Annotated[str, typer.Option(
    help="What the last stage trains: 'health' (the health heads; anomaly outputs stay as they were) or 'all'.")]
FinetuneLr = Annotated[float, typer.Option("--finetune-lr", min=0.0, help="Starting rate of the last stage.")]
RawTiming = Annotated[bool, typer.Option(help="Also read each window at full time resolution (model option).")]


def checked_pool(pool: int, windows: int) -> int:
    """--simulated-pool: 0 (no pool) or at least one epoch's --simulated-windows."""
    if 0 < pool < windows:
        raise typer.BadParameter(f"{pool} is fewer than --simulated-windows ({windows}); use 0 or at least that",
                                 param_hint="--simulated-pool")
    return pool


def checked_variants(variants: int, windows: int) -> int:
    """--topology-variants: each variant needs at least one of the epoch's --simulated-windows."""
    if variants > 1 and variants > windows:
        raise typer.BadParameter(f"{variants} variants cannot share {windows} --simulated-windows",
                                 param_hint="--topology-variants")
    return variants


def checked_scope(scope: str) -> str:
    """--finetune-scope: one of the scopes the training loop knows."""
    from hydrodiag.training.train import FINETUNE_SCOPES

    if scope not in FINETUNE_SCOPES:
        raise typer.BadParameter(f"'{scope}' is not one of {', '.join(FINETUNE_SCOPES)}", param_hint="--finetune-scope")
    return scope


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default API_HOST or 0.0.0.0)."),
    port: int | None = typer.Option(None, help="Port (default API_PORT or 8002)."),
    model_path: Path | None = typer.Option(None, help="Checkpoint to serve (default MODEL_PATH)."),
) -> None:
    """Serve the HTTP API."""
    from hydrodiag.api.server import run_server

    run_server(host=host, port=port, model_path=model_path)


@app.command()
def train(
    data: UciData,
    out: Path = typer.Option(Path("models/default.ckpt"), "--out", help="Checkpoint file to write."),
    epochs: Epochs = 80,
    seed: int = typer.Option(0, help="Seed for weights, shuffling and simulation."),
    exclude: Path | None = typer.Option(None, "--exclude", help="File of cycle indices training never sees."),
    simulated_windows: int = typer.Option(100, min=0, help="Simulated windows per excavator/press/crane."),
    simulated_pool: SimulatedPool = 0,
    holdout_topology: str | None = typer.Option(None, help="Simulated topology kept out of training."),
    model_version: str = typer.Option("1.0.0", help="Semantic version stored in the checkpoint."),
    metrics: Path | None = typer.Option(None, help="Evaluation report JSON whose summary goes into the checkpoint."),
    limit_cycles: int = typer.Option(0, min=0, help="Use only the first N UCI cycles (smoke runs)."),
    threads: int = typer.Option(0, min=0, help="Torch threads for training (0 = torch's choice)."),
    average_last: AverageLast = 0.0,
    sensor_dropout: SensorDropout = 0.0,
    raw_timing: RawTiming = False,
    anomaly_balance: AnomalyBalance = 1.0,
    topology_variants: TopologyVariants = 1,
    finetune_epochs: FinetuneEpochs = 0,
    finetune_scope: FinetuneScope = "health",
    finetune_lr: FinetuneLr = 1e-3,
) -> None:
    """Train the UniversalTemporalGNN on UCI cycles (plus optional simulated machines)."""
    from hydrodiag.cli_support import recipe_from_options, run_training

    recipe = recipe_from_options(
        epochs=epochs, seed=seed, threads=threads, simulated_windows=simulated_windows,
        simulated_pool=checked_pool(simulated_pool, simulated_windows), holdout_topology=holdout_topology,
        average_last=average_last, sensor_dropout=sensor_dropout, raw_timing=raw_timing,
        anomaly_balance=anomaly_balance, topology_variants=checked_variants(topology_variants, simulated_windows),
        finetune_epochs=finetune_epochs, finetune_scope=checked_scope(finetune_scope),
        finetune_learning_rate=finetune_lr)
    run_training(data=data, out=out, recipe=recipe, exclude=exclude, model_version=model_version, metrics=metrics,
                 limit_cycles=limit_cycles)


@app.command()
def evaluate(
    data: UciData,
    out: Path = typer.Option(Path("docs/evaluation"), "--out", help="Folder for REPORT.md, report.json, plots."),
    epochs: Epochs = 80,
    seed: int = typer.Option(0, help="Seed for folds, weights and simulation."),
    simulated_windows: int = typer.Option(100, min=0, help="Simulated windows per training topology."),
    simulated_pool: SimulatedPool = 0,
    holdout_topology: str | None = typer.Option("crane", help="Simulated topology held out for the universality test."),
    max_folds: int | None = typer.Option(None, min=1, help="Only the first N folds of each split (smoke runs)."),
    splits: str = typer.Option("combination_heldout_5fold,shuffled_10fold", help="Comma-separated splits."),
    jobs: int = typer.Option(2, min=1, help="Folds trained in parallel processes (one torch thread each)."),
    attach_to: Path | None = typer.Option(None, help="Checkpoint trained by the same recipe: store the summary in it."),
    merge: bool = typer.Option(False, help="Keep the other splits of an existing report in --out."),
    universality: bool = typer.Option(True, help="Also train and test against the held-out simulated topology."),
    simulated_only: bool = typer.Option(
        False, help="Train the held-out-topology model on simulated machines alone, without UCI cycles (a "
                    "reference for what the model learns of them when the rig does not dominate; needs --splits '')."),
    average_last: AverageLast = 0.0,
    sensor_dropout: SensorDropout = 0.0,
    raw_timing: RawTiming = False,
    anomaly_balance: AnomalyBalance = 1.0,
    topology_variants: TopologyVariants = 1,
    finetune_epochs: FinetuneEpochs = 0,
    finetune_scope: FinetuneScope = "health",
    finetune_lr: FinetuneLr = 1e-3,
) -> None:
    """Cross-validate the training recipe on UCI (and a held-out simulated machine); write a report."""
    from hydrodiag.cli_support import recipe_from_options, run_evaluation

    split_names = [s for s in splits.split(",") if s]
    if simulated_only and (split_names or not universality):
        raise typer.BadParameter("trains only the held-out-topology model: use it with --splits '' and --universality",
                                 param_hint="--simulated-only")
    recipe = recipe_from_options(
        epochs=epochs, seed=seed, simulated_windows=simulated_windows,
        simulated_pool=checked_pool(simulated_pool, simulated_windows), holdout_topology=holdout_topology,
        average_last=average_last, sensor_dropout=sensor_dropout, raw_timing=raw_timing,
        anomaly_balance=anomaly_balance, topology_variants=checked_variants(topology_variants, simulated_windows),
        finetune_epochs=finetune_epochs, finetune_scope=checked_scope(finetune_scope),
        finetune_learning_rate=finetune_lr)
    run_evaluation(data=data, out=out, recipe=recipe, max_folds=max_folds, splits=split_names, jobs=jobs,
                   attach_to=attach_to, merge=merge, universality=universality, simulated_only=simulated_only)


@app.command()
def ceiling(
    data: UciData,
    split: str = typer.Option("combination_heldout_5fold", help="Split of `evaluate` to score on."),
    targets: str = typer.Option("cooler,valve,pump,accumulator", help="Comma-separated UCI targets."),
    seed: int = typer.Option(0, help="Seed for folds and trees."),
    max_folds: int | None = typer.Option(None, min=1, help="Only the first N folds (smoke runs)."),
    out: Path | None = typer.Option(None, "--out", help="JSON file for the result."),
) -> None:
    """How much of each UCI target the 1 Hz data allows: gradient-boosted trees on every raw value."""
    from hydrodiag.cli_support import run_ceiling

    try:
        run_ceiling(data=data, split=split, targets=[t for t in targets.split(",") if t], seed=seed,
                    max_folds=max_folds, out=out)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def ensemble(
    data: UciData,
    runs: list[Path] = typer.Option(..., "--run", help="An `evaluate --out` folder of one seed (give two or more)."),
    split: str = typer.Option("combination_heldout_5fold", help="Split whose kept folds are combined."),
    out: Path | None = typer.Option(None, "--out", help="JSON file for the result."),
) -> None:
    """Score the mean prediction of several `evaluate` runs (a seed ensemble) from their kept folds."""
    from hydrodiag.cli_support import run_ensemble

    try:
        run_ensemble(data=data, runs=runs, split=split, out=out)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def separability(
    topology: str = typer.Option("excavator", "--topology", help="Template id of a simulated machine."),
    units: int = typer.Option(400, min=1, help="Units the forest learns from."),
    test_units: int = typer.Option(100, min=1, help="New units it is scored on."),
    commissioning_windows: int = typer.Option(30, min=2, help="Healthy windows recorded per unit."),
    windows_per_unit: int = typer.Option(5, min=1, help="Labelled windows observed per unit."),
    seed: int = typer.Option(0, help="Seed of the fleets and the model."),
    model: str = typer.Option("forest", help="forest: random forest on 7 window statistics per sensor; trees: "
                              "gradient-boosted trees on those and every value and change (slower)."),
    readings: str = typer.Option("fleet,own unit,both", help="Comma-separated readings to score."),
    out: Path | None = typer.Option(None, "--out", help="JSON file for the result."),
) -> None:
    """How separable a simulated machine's faults are, read against the fleet or against each unit's own
    commissioning (a model trained on a fleet of units, scored on new units)."""
    from hydrodiag.cli_support import run_separability
    from hydrodiag.errors import HydrodiagError

    try:
        run_separability(topology=topology, units=units, test_units=test_units,
                         commissioning_windows=commissioning_windows, windows_per_unit=windows_per_unit, seed=seed,
                         model=model, readings=tuple(r.strip() for r in readings.split(",") if r.strip()), out=out)
    except (ValueError, HydrodiagError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def simulate(
    topology: str = typer.Option(..., "--topology", help="Template id (excavator, press, crane...) or topology JSON."),
    windows: int = typer.Option(1000, "--windows", min=1, help="Windows to simulate."),
    seed: int = typer.Option(0, help="Seed; the same seed and options give the same data."),
    out: Path = typer.Option(..., "--out", help="Output .npz; the metadata sidecar gets the same name with .json."),
    samples: int = typer.Option(60, min=2, help="Samples per window."),
    rate: float = typer.Option(1.0, min=0.001, help="Sample rate in Hz."),
    fault_fraction: float = typer.Option(0.6, min=0.0, max=1.0, help="Share of windows with faults (random mode)."),
    max_faults: int = typer.Option(2, min=1, help="Most faults in one window (random mode)."),
    anomaly: str | None = typer.Option(None, help="Inject only this anomaly type."),
    component: str | None = typer.Option(None, help="Inject only into this component."),
    degradation: bool = typer.Option(False, "--degradation",
                                     help="One unit whose --anomaly on --component ramps from 0 to 1."),
) -> None:
    """Simulate sensor windows of a machine (physics-based, docs/SIMULATOR.md) into an .npz + JSON sidecar."""
    from hydrodiag.errors import HydrodiagError
    from hydrodiag.training.simulator.export import run_simulate

    try:
        run_simulate(topology=topology, windows=windows, seed=seed, out=out, samples=samples, rate=rate,
                     fault_fraction=fault_fraction, max_faults=max_faults, anomaly=anomaly, component=component,
                     degradation=degradation, echo=typer.echo)
    except (ValueError, HydrodiagError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def commission(
    topology: str = typer.Option(..., "--topology", help="Template or registered-topology JSON file, or template id."),
    readings: Path = typer.Option(..., "--readings", help="JSON object: sensor name -> readings in normal service."),
    out: Path = typer.Option(..., "--out", help="Topology JSON to write, with every sensor's baseline."),
    topology_id: str | None = typer.Option(None, "--id", help="Id of the written topology (default: the source's)."),
) -> None:
    """Record a machine's normal sensor levels in its topology (then register it: POST /topologies)."""
    import json

    from hydrodiag.errors import HydrodiagError
    from hydrodiag.topology.commissioning import commission as commission_topology
    from hydrodiag.topology.templates import TopologyRegistry, load_template_file

    try:
        source = Path(topology)
        base = load_template_file(source) if source.is_file() else TopologyRegistry().get(topology, "--topology")
        result = commission_topology(base, json.loads(readings.read_text(encoding="utf-8")), topology_id=topology_id)
    except (OSError, ValueError, HydrodiagError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    out.write_text(result.model_dump_json(indent=2, exclude_none=True) + "\n", encoding="utf-8")
    typer.echo(f"wrote {out}: baselines for {sum(s.baseline is not None for s in result.sensors)} sensors")


if __name__ == "__main__":
    app()
