"""Keep torch._dynamo out of processes that never compile a model.

PyTorch Geometric 2.8 imports `torch._dynamo` at start-up for one helper, `is_torch_instance`,
which only needs it to unwrap models made by `torch.compile`. That import costs ~70 MB of resident
memory and ~2 s of start-up in every process (server, CLI, training workers), compiling or not.
Until something imports torch._dynamo no object can be a compiled module, so the helper below is
exactly PyG's as long as it is installed before `torch_geometric` is first imported
(`hydrodiag/__init__.py` does that). torch.compile imports torch._dynamo itself when it is used.
"""

from __future__ import annotations

import sys
import types
from typing import Any

PYG_ISINSTANCE = "torch_geometric.isinstance"


def is_torch_instance(obj: Any, cls: type | tuple[type, ...]) -> bool:
    """`isinstance`, seeing through `torch.compile` wrappers (PyG's `is_torch_instance`)."""
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None and isinstance(obj, dynamo.OptimizedModule):
        return isinstance(obj._orig_mod, cls)
    return isinstance(obj, cls)


def defer_torch_dynamo() -> None:
    """Serve PyG's `torch_geometric.isinstance` from here unless PyG is already imported."""
    if PYG_ISINSTANCE in sys.modules or "torch_geometric" in sys.modules:
        return
    module = types.ModuleType(PYG_ISINSTANCE, __doc__)
    module.is_torch_instance = is_torch_instance  # type: ignore[attr-defined]
    sys.modules[PYG_ISINSTANCE] = module
