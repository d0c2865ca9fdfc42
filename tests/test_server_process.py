"""The server entry point: configuration errors stop it with one line and status 2; a checkpoint
that fails while loading leaves a running but unready server that says why; its working threads
carry their names where `top -H` and `ps -L` look."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch
from conftest import RunningServer, UciCycles, server_env, start_server, stop_server
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def _run_entry_point(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hydrodiag.api", "--host", "127.0.0.1", "--port", "1"],
        cwd=tmp_path, env=server_env(**env), capture_output=True, text=True, timeout=120,
    )


def test_invalid_setting_exits_2_naming_the_variable(tmp_path: Path) -> None:
    result = _run_entry_point(tmp_path, BATCH_SIZE="lots")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "BATCH_SIZE" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_missing_checkpoint_exits_2_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.ckpt"
    result = _run_entry_point(tmp_path, MODEL_PATH=str(missing))
    assert result.returncode == 2
    assert str(missing) in result.stderr and "MODEL_PATH" in result.stderr
    assert "Traceback" not in result.stderr


def test_checkpoint_failing_at_load_is_reported_not_served(model_path: Path, tmp_path: Path) -> None:
    broken = tmp_path / "mismatch.ckpt"
    tensors = load_file(str(model_path))
    with safe_open(str(model_path), framework="pt") as handle:
        metadata = handle.metadata()
    name = next(k for k, v in tensors.items() if v.dim() == 2)
    tensors[name] = torch.zeros(tensors[name].shape[0] + 1, tensors[name].shape[1])
    save_file(tensors, str(broken), metadata=metadata)

    server = start_server(broken, tmp_path / "server.log", wait_ready=False)
    try:
        with httpx.Client(base_url=server.base_url, timeout=30.0) as http:
            health = http.get("/health")
            for _ in range(300):
                if health.json()["status"] != "starting":
                    break
                health = http.get("/health")
            assert health.status_code == 503 and health.json()["status"] == "unhealthy"
            assert broken.name in health.json()["error"]
            assert str(broken.parent) not in health.text  # no internal path in a response
            ready = http.get("/ready")
            assert ready.status_code == 503 and "do not fit" in ready.json()["error"]
            assert "Traceback" not in ready.text
            payload = {"equipment_id": "e", "sensor_data": {"pressure_pump": [1, 2]}}
            refused = http.post("/predict", json=payload)
            assert refused.status_code == 503 and refused.headers["retry-after"]
    finally:
        stop_server(server)


def test_working_threads_are_named_for_the_operating_system(server: RunningServer, client: httpx.Client,
                                                            uci: UciCycles) -> None:
    assert client.post("/predict", json=uci.request("nominal", "thread-names")).status_code == 200
    tasks = Path(f"/proc/{server.process.pid}/task")
    if not tasks.is_dir():
        pytest.skip("no /proc task list on this platform: thread names are set on Linux only")
    names = {(task / "comm").read_text().strip() for task in tasks.iterdir()}
    assert {"forward_0", "history-writer"} <= names, names
