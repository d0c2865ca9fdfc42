"""The serving process must not pay for torch._dynamo unless it compiles (issue 4: memory)."""

from __future__ import annotations

import subprocess
import sys

import torch

from hydrodiag.lazy_imports import is_torch_instance


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.strip()


def test_serving_and_training_modules_do_not_import_torch_dynamo() -> None:
    loaded = _run("import sys, hydrodiag.api.app, hydrodiag.training.evaluate, torch_geometric.nn; "
                  "print('torch._dynamo' in sys.modules, 'sympy' in sys.modules)")
    assert loaded == "False False"


def test_pyg_sees_through_compiled_models_once_compile_is_used() -> None:
    import torch_geometric

    module = torch.nn.Linear(2, 2)
    compiled = torch.compile(module)  # wraps only; nothing is compiled until it is called
    assert torch_geometric.is_torch_instance is is_torch_instance
    assert is_torch_instance(compiled, torch.nn.Linear)
    assert not isinstance(compiled, torch.nn.Linear)
    assert is_torch_instance(module, torch.nn.Linear)
    assert not is_torch_instance(module, torch.nn.Conv1d)
