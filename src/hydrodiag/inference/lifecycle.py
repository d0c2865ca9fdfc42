"""Model lifecycle: which versions exist under the model directory, which one serves, and switching.

Listing reads only checkpoint metadata (`read_metadata`: the safetensors header, no weights).
Activation loads and warms the new model beside the serving one and swaps the engine's reference
in one assignment (`InferenceEngine.swap_model`): requests already admitted finish on the model
they started with, and a load or warm-up failure leaves the old model serving. Rollback is
activating the previous version again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydrodiag.errors import CheckpointError, ModelActivationError, NotFoundError
from hydrodiag.inference.engine import InferenceEngine
from hydrodiag.inference.peers import Peers
from hydrodiag.model.checkpoint import read_metadata

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".ckpt"


@dataclass(frozen=True)
class ModelFile:
    """One checkpoint file; `version` is None when its metadata cannot be read (`problem` says why)."""

    path: Path
    version: str | None
    problem: str | None = None
    created: str | None = None
    metrics: dict[str, Any] | None = None


class ModelLifecycle:
    def __init__(self, engine: InferenceEngine, model_dir: Path, peers: Peers | None = None) -> None:
        self.engine = engine
        self.model_dir = Path(model_dir)
        self.peers = peers
        self.previous_version: str | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    @property
    def active_version(self) -> str | None:
        served = self.engine.model
        return served.model_version if served is not None else None

    def scan(self) -> list[ModelFile]:
        """Every `*.ckpt` in the model directory (and the serving file, wherever it lives)."""
        paths = sorted(self.model_dir.glob(f"*{CHECKPOINT_SUFFIX}")) if self.model_dir.is_dir() else []
        served = self.engine.model
        if served is not None and served.path.resolve() not in {p.resolve() for p in paths}:
            paths.insert(0, served.path)
        files = []
        for path in paths:
            try:
                metadata = read_metadata(path)
            except CheckpointError as exc:
                files.append(ModelFile(path=path, version=None, problem=exc.problem))
                continue
            training = metadata.get("training") or {}
            created = training.get("created_at") or training.get("finished_at")
            files.append(ModelFile(path=path, version=str(metadata.get("model_version")),
                                   created=str(created) if created else None,
                                   metrics=metadata.get("metrics") or None))
        return files

    def find(self, version: str) -> Path:
        """The file holding `version`; the serving file wins when several do."""
        candidates = [f.path for f in self.scan() if f.version == version]
        if not candidates:
            raise NotFoundError(f"model version '{version}' not found in the model directory")
        served = self.engine.model
        if served is not None:
            for path in candidates:
                if path.resolve() == served.path.resolve():
                    return path
        return candidates[0]

    async def activate(self, version: str) -> dict[str, Any]:
        """Load, warm up and serve `version`; one activation at a time. With WORKERS > 1, answers once
        every worker serves it."""
        async with self.lock:
            path = await asyncio.to_thread(self.find, version)
            before = self.active_version
            try:
                info = await self._serve(path)
            except CheckpointError as exc:
                logger.error("activation of %s (%s) failed: %s", version, path, exc)
                raise ModelActivationError(version, f"file '{path.name}': {exc.problem}", before) from None
            except Exception as exc:  # a warm-up crash must not take the serving model with it
                logger.exception("activation of %s (%s) failed", version, path)
                raise ModelActivationError(version, f"{type(exc).__name__} during load or warm-up",
                                           before) from None
            logger.info("model version %s active (previous %s)", info["model_version"], self.previous_version)
        if self.peers is not None:
            await self.peers.publish(f"activating version '{version}'", model_path=path)
        return info

    async def follow(self, path: Path) -> None:
        """Serve `path` because another worker of this server activated it (WORKERS > 1)."""
        async with self.lock:
            served = self.engine.model
            if served is not None and served.path.resolve() == path.resolve():
                return
            info = await self._serve(path)
            logger.info("following the other workers: model version %s active (previous %s)",
                        info["model_version"], self.previous_version)

    async def _serve(self, path: Path) -> dict[str, Any]:
        before = self.active_version
        info = await self.engine.swap_model(path)
        if before is not None and before != info["model_version"]:
            self.previous_version = before
        return info
