"""The UniversalTemporalGNN and its self-describing checkpoint format."""

from hydrodiag.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from hydrodiag.model.gnn import ModelConfig, ModelOutput, UniversalTemporalGNN

__all__ = ["Checkpoint", "ModelConfig", "ModelOutput", "UniversalTemporalGNN", "load_checkpoint", "save_checkpoint"]
