"""HTTP layer: FastAPI app, routes and the error -> status mapping. Run with `python -m hydrodiag.api`.

`create_app` is imported lazily: `python -m hydrodiag.api` imports this package first, and a
configuration error must be reported before torch and the model code are imported (seconds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hydrodiag.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from hydrodiag.api.app import create_app

        return create_app
    raise AttributeError(f"module 'hydrodiag.api' has no attribute {name!r}")
