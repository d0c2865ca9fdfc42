"""Model lifecycle on a real server: list versions, hot swap under concurrent load without a failed
request, roll back, and a corrupt checkpoint that keeps the old model serving with a clear error."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import torch
from conftest import RunningServer, UciCycles, assert_no_stack_trace, start_server, stop_server
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hydrodiag.model.checkpoint import METADATA_KEY, load_checkpoint, read_metadata, save_checkpoint


def _copy_with_version(source: Path, target: Path, version: str) -> None:
    """The same trained weights under another model_version (a real model, not random weights)."""
    checkpoint = load_checkpoint(source)
    checkpoint.model_version = version
    save_checkpoint(checkpoint, target)


def _corrupt_with_version(source: Path, target: Path, version: str) -> None:
    """Readable metadata naming `version`, but weights that do not fit the model."""
    tensors = load_file(str(source))
    with safe_open(str(source), framework="pt") as handle:
        metadata = dict(handle.metadata())
    meta = json.loads(metadata[METADATA_KEY])
    meta["model_version"] = version
    metadata[METADATA_KEY] = json.dumps(meta)
    name = next(k for k, v in tensors.items() if v.dim() == 2)
    tensors[name] = torch.zeros(tensors[name].shape[0] + 1, tensors[name].shape[1])
    save_file(tensors, str(target), metadata=metadata)


@pytest.fixture(scope="module")
def versions(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, str]:
    directory = tmp_path_factory.mktemp("models")
    base = read_metadata(model_path)["model_version"]
    shutil.copy(model_path, directory / "a.ckpt")
    second, broken = f"{base}+swap", f"{base}+corrupt"
    _copy_with_version(model_path, directory / "b.ckpt", second)
    _corrupt_with_version(model_path, directory / "c.ckpt", broken)
    (directory / "d.ckpt").write_bytes((directory / "a.ckpt").read_bytes()[:100])  # truncated
    return directory, base, second, broken


@pytest.fixture(scope="module")
def server(versions: tuple[Path, str, str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = versions[0]
    running = start_server(directory / "a.ckpt", tmp_path_factory.mktemp("lifecycle") / "server.log",
                           MODEL_CACHE_SIZE="2")
    try:
        yield running
    finally:
        stop_server(running)


async def test_listing_swap_under_load_rollback_and_corrupt(server: RunningServer, uci: UciCycles,
                                                            versions: tuple[Path, str, str, str]) -> None:
    _, base, second, broken = versions
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120.0) as http:
        listing = (await http.get("/models")).json()
        assert listing["active"] == base and listing["previous"] is None
        by_file = {v["file"]: v for v in listing["versions"]}
        assert by_file["a.ckpt"]["active"] and by_file["b.ckpt"]["version"] == second
        assert by_file["c.ckpt"]["version"] == broken  # metadata is fine; the weights are not
        assert by_file["d.ckpt"]["version"] is None and "truncated" in by_file["d.ckpt"]["problem"]

        body = orjson.dumps(uci.request("nominal", "swap-load"))
        results: list[tuple[int, str | None]] = []
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                response = await http.post("/predict", content=body, headers={"Content-Type": "application/json"})
                results.append((response.status_code, response.json().get("model_version")))

        workers = [asyncio.create_task(load()) for _ in range(8)]
        await asyncio.sleep(1.0)
        swapped = await http.post(f"/models/{second}/activate")
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*workers)
        assert swapped.status_code == 200, swapped.text
        assert swapped.json()["active"] == second and swapped.json()["previous"] == base
        assert results and all(status == 200 for status, _ in results), results[:5]
        seen = [version for _, version in results]
        assert set(seen) <= {base, second} and seen[-1] == second
        # Once the new model answers, the old one never does again (one atomic swap).
        assert base not in seen[seen.index(second):]
        print(f"\nhot swap: {len(results)} requests during the swap, all 200; "
              f"{seen.count(base)} by {base}, {seen.count(second)} by {second}")

        after = (await http.post("/predict", content=body, headers={"Content-Type": "application/json"})).json()
        assert after["model_version"] == second
        metrics = (await http.get("/metrics")).text
        assert f'hydrodiag_model_info{{device="cpu",file="b.ckpt",version="{second}"}} 1.0' in metrics

        # A corrupt checkpoint: clear 422, the current model keeps serving.
        failed = await http.post(f"/models/{broken}/activate")
        assert failed.status_code == 422
        error = failed.json()["error"]
        assert broken in error and "c.ckpt" in error and f"still serving version '{second}'" in error
        assert "do not fit" in error and str(versions[0]) not in error
        assert_no_stack_trace(failed)
        assert (await http.get("/ready")).json()["model_version"] == second
        assert (await http.post("/predict", content=body,
                                headers={"Content-Type": "application/json"})).json()["model_version"] == second

        # Rollback = activating the previous version.
        previous = (await http.get("/models")).json()["previous"]
        assert previous == base
        rolled = await http.post(f"/models/{previous}/activate")
        assert rolled.status_code == 200 and rolled.json()["active"] == base
        assert (await http.get("/models")).json()["previous"] == second
        assert (await http.get("/v2/models/hydrodiag")).json()["versions"][0] == base
