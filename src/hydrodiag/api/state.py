"""What the app keeps on `app.state`, read back by the routers in one typed place."""

from __future__ import annotations

from fastapi import Request

from hydrodiag.inference.engine import InferenceEngine
from hydrodiag.inference.peers import Peers


def engine_of(request: Request) -> InferenceEngine:
    engine: InferenceEngine = request.app.state.engine
    return engine


def peers_of(request: Request) -> Peers | None:
    """The other worker processes of this server (WORKERS > 1), else None."""
    peers: Peers | None = request.app.state.peers
    return peers
