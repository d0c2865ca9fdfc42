"""ModelManager with real checkpoints: thread safety, LRU, devices, compile fallback, corruption."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hydrodiag.errors import CheckpointError, DeviceUnavailableError, ModelNotLoadedError
from hydrodiag.inference.manager import ModelManager, ServedModel, resolve_device
from hydrodiag.model.checkpoint import METADATA_KEY


@pytest.fixture
def copies(model_path: Path, tmp_path: Path) -> list[Path]:
    paths = []
    for name in ("a", "b", "c"):
        path = tmp_path / f"{name}.ckpt"
        shutil.copyfile(model_path, path)
        paths.append(path)
    return paths


def test_model_lifecycle_and_info(model_path: Path) -> None:
    manager = ModelManager(capacity=2)
    with pytest.raises(ModelNotLoadedError):
        manager.get_model(model_path)
    served = manager.load_model(model_path, device="cpu")
    assert manager.get_model(model_path) is served
    info = manager.get_model_info(model_path)
    assert info["device"] == "cpu" and info["num_parameters"] == served.module.num_parameters() > 0
    assert info["model_version"] and info["path"] == str(model_path.resolve())
    assert info["loaded_at"] and isinstance(info["metrics"], dict) and info["compiled"] is False
    assert manager.warmup(model_path, batch_size=4) > 0
    assert manager.get_model_info(model_path)["warmup_time_s"] is not None
    assert manager.list_cached_models() == [str(model_path.resolve())]
    manager.clear_cache(model_path)
    assert manager.list_cached_models() == []


def test_one_load_for_many_threads(copies: list[Path]) -> None:
    manager = ModelManager(capacity=4)
    barrier = threading.Barrier(16)

    def hammer(worker: int) -> list[ServedModel]:
        barrier.wait()
        got = []
        for i in range(12):
            path = copies[(worker + i) % 2]  # two files, requested in interleaved order
            got.append(manager.load_model(path, device="cpu"))
            got.append(manager.get_model(path))
            manager.list_cached_models()
        return got

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = [m for batch in pool.map(hammer, range(16)) for m in batch]
    by_path: dict[Path, set[int]] = {}
    for served in results:
        by_path.setdefault(served.path, set()).add(id(served))
    assert len(by_path) == 2 and all(len(ids) == 1 for ids in by_path.values())  # the same object each time
    assert manager.loads == 2  # each file read exactly once


def test_lru_eviction(copies: list[Path]) -> None:
    a, b, c = copies
    manager = ModelManager(capacity=2)
    first_a = manager.load_model(a, device="cpu")
    manager.load_model(b, device="cpu")
    manager.load_model(a, device="cpu")  # a is now the most recently used
    manager.load_model(c, device="cpu")  # evicts b, the least recently used
    assert manager.list_cached_models() == [str(a.resolve()), str(c.resolve())]
    assert manager.loads == 3
    assert manager.load_model(a, device="cpu") is first_a
    with pytest.raises(ModelNotLoadedError):
        manager.get_model(b)
    manager.clear_cache()
    assert manager.list_cached_models() == []


def test_changed_file_is_reloaded(copies: list[Path]) -> None:
    path = copies[0]
    manager = ModelManager()
    first = manager.load_model(path, device="cpu")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = manager.load_model(path, device="cpu")
    assert second is not first and manager.loads == 2


def test_singleton() -> None:
    assert ModelManager.instance() is ModelManager.instance()


def test_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceUnavailableError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(DeviceUnavailableError):
        resolve_device("cuda:99")


def test_compile_failure_falls_back_to_eager(model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manager = ModelManager()
    with caplog.at_level(logging.WARNING, logger="hydrodiag.inference.manager"):
        served = manager.load_model(model_path, device="cpu", use_compile=True, compile_mode="no-such-mode")
    assert not served.compiled and "no-such-mode" in (served.compile_error or "")
    assert any("serving the eager model" in r.getMessage() for r in caplog.records)
    assert manager.warmup(model_path, batch_size=2) > 0  # the eager model serves


# --- corrupt checkpoints: each problem is a CheckpointError that names the file ---------------------


def _truncated(source: Path, target: Path) -> None:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])


def _random_bytes(source: Path, target: Path) -> None:
    target.write_bytes(random.Random(7).randbytes(4096))


def _foreign(source: Path, target: Path) -> None:
    save_file({"weight": torch.zeros(3, 3)}, str(target), metadata={"framework": "someone-else"})


def _shape_mismatch(source: Path, target: Path) -> None:
    tensors = load_file(str(source))
    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata()
    name = next(k for k, v in tensors.items() if v.dim() == 2)
    tensors[name] = torch.zeros(tensors[name].shape[0] + 1, tensors[name].shape[1])
    save_file(tensors, str(target), metadata=metadata)


def _bad_metadata_json(source: Path, target: Path) -> None:
    save_file(load_file(str(source)), str(target), metadata={METADATA_KEY: "{not json"})


def _other_vocabulary(source: Path, target: Path) -> None:
    with safe_open(str(source), framework="pt") as handle:
        metadata = json.loads(handle.metadata()[METADATA_KEY])
    metadata["vocabularies"]["anomaly_types"] = ["something_else"]
    save_file(load_file(str(source)), str(target), metadata={METADATA_KEY: json.dumps(metadata)})


def _other_features(source: Path, target: Path) -> None:
    """A checkpoint trained on inputs encoded differently from this release's (say, a later one)."""
    with safe_open(str(source), framework="pt") as handle:
        metadata = json.loads(handle.metadata()[METADATA_KEY])
    metadata["feature_version"] = 99
    save_file(load_file(str(source)), str(target), metadata={METADATA_KEY: json.dumps(metadata)})


CORRUPTIONS = {
    "truncated": (_truncated, "truncated or corrupt"),
    "random_bytes": (_random_bytes, "truncated or corrupt"),
    "foreign_safetensors": (_foreign, "foreign format"),
    "shape_mismatch": (_shape_mismatch, "do not fit"),
    "bad_metadata_json": (_bad_metadata_json, "not valid JSON"),
    "other_vocabulary": (_other_vocabulary, "vocabularies"),
    "other_features": (_other_features, "input features version 99"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_checkpoint_names_the_file(kind: str, model_path: Path, tmp_path: Path) -> None:
    corrupt, problem = CORRUPTIONS[kind]
    target = tmp_path / f"{kind}.ckpt"
    corrupt(model_path, target)
    manager = ModelManager()
    with pytest.raises(CheckpointError) as caught:
        manager.load_model(target, device="cpu")
    assert str(target.resolve()) in str(caught.value) and problem in str(caught.value)
    assert manager.list_cached_models() == []


def test_missing_checkpoint_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.ckpt"
    with pytest.raises(CheckpointError, match="file not found") as caught:
        ModelManager().load_model(missing, device="cpu")
    assert str(missing.resolve()) in str(caught.value)
