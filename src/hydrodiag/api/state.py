"""What the app keeps on `app.state`, read back by the routers in one typed place."""

from __future__ import annotations

from fastapi import Request

from hydrodiag.inference.engine import InferenceEngine


def engine_of(request: Request) -> InferenceEngine:
    engine: InferenceEngine = request.app.state.engine
    return engine
