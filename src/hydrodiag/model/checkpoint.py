"""Self-describing checkpoint: safetensors weights + one JSON metadata document in its header.

Safetensors never executes code on load, unlike a pickle. The metadata carries everything needed
to rebuild and trust the model: format version, semantic model version, model config, the
vocabularies the output heads were trained with, normalisation statistics, training provenance and
evaluation metrics. Every failure names the file and the problem (`CheckpointError`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from hydrodiag.errors import CheckpointError
from hydrodiag.features.graph import GRAPH_EDGE_TYPES
from hydrodiag.features.window import FEATURE_VERSION, NormStats
from hydrodiag.model.gnn import ModelConfig, UniversalTemporalGNN
from hydrodiag.taxonomy import ANOMALY_TYPES, COMPONENT_TYPES, QUANTITY_NAMES

FORMAT_NAME = "hydrodiag-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "hydrodiag"


def current_vocabularies() -> dict[str, list[str]]:
    return {
        "anomaly_types": list(ANOMALY_TYPES),
        "component_types": list(COMPONENT_TYPES),
        "quantities": list(QUANTITY_NAMES),
        "edge_types": list(GRAPH_EDGE_TYPES),
    }


@dataclass
class Checkpoint:
    model: UniversalTemporalGNN
    norm: NormStats
    model_version: str
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model_version": self.model_version,
            "config": self.config.to_dict(),
            "feature_version": FEATURE_VERSION,
            "vocabularies": current_vocabularies(),
            "normalisation": self.norm.to_dict(),
            "training": self.training,
            "metrics": self.metrics,
        }


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in checkpoint.model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(checkpoint.metadata(), sort_keys=True)})
    tmp.chmod(0o644)
    tmp.replace(path)  # atomic: a reader never sees a half-written checkpoint
    checkpoint.path = path
    return path


def read_metadata(path: Path) -> dict[str, Any]:
    """The checkpoint's metadata without loading its weights."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if not path.is_file():
        raise CheckpointError(path, "not a regular file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(path, f"not a readable safetensors file (truncated or corrupt?): {exc}") from None
    if raw is None:
        raise CheckpointError(path, f"foreign format: no '{METADATA_KEY}' metadata (not a hydrodiag checkpoint)")
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(path, f"metadata is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(path, f"foreign format: expected format '{FORMAT_NAME}'")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            path, f"format version {metadata.get('format_version')} is not supported (expected {FORMAT_VERSION})"
        )
    return metadata


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> Checkpoint:
    path = Path(path)
    metadata = read_metadata(path)
    if metadata.get("vocabularies") != current_vocabularies():
        raise CheckpointError(path, "trained with different vocabularies (anomaly/component/quantity/edge types)")
    # Checkpoints written before the encoding was versioned read their inputs as version 1.
    trained_features = metadata.get("feature_version", 1)
    if trained_features != FEATURE_VERSION:
        raise CheckpointError(path, f"trained on input features version {trained_features}; this server encodes "
                                    f"version {FEATURE_VERSION} (retrain it with this release's `hydrodiag train`)")
    try:
        config = ModelConfig(**metadata["config"])
        norm = NormStats.from_dict(metadata["normalisation"])
        model_version = str(metadata["model_version"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(path, f"metadata is incomplete or invalid: {exc}") from None
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(path, f"weights are unreadable (truncated or corrupt?): {exc}") from None
    model = UniversalTemporalGNN(config)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        # torch's first line only names the class; the lines after it name the offending tensors.
        details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        summary = "; ".join(details)[:500] or "mismatch"
        raise CheckpointError(path, f"weights do not fit the model configuration: {summary}") from None
    model.to(device).eval()
    return Checkpoint(
        model=model,
        norm=norm,
        model_version=model_version,
        training=metadata.get("training", {}),
        metrics=metadata.get("metrics", {}),
        path=path,
    )
