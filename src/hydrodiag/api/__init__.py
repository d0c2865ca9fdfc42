"""HTTP layer: FastAPI app, routes and the error -> status mapping. Run with `python -m hydrodiag.api`."""

from hydrodiag.api.app import create_app

__all__ = ["create_app"]
