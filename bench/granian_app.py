"""hydrodiag's app for the Granian server (measured against uvicorn, not kept: bench/tried.md).

Applies what `hydrodiag serve` applies to the process (torch threads, GIL switch interval, garbage
collector thresholds, logging) and returns the same FastAPI app, so that only the HTTP server differs:

    .venv/bin/pip install granian==2.8.7
    MODEL_PATH=models/default.ckpt .venv/bin/granian --interface asgi --factory --port 8112 \
        --loop uvloop --no-ws bench.granian_app:make_app
"""

from __future__ import annotations

from fastapi import FastAPI

from hydrodiag.api.app import create_app
from hydrodiag.api.server import apply_process_settings
from hydrodiag.settings import load_settings


def make_app() -> FastAPI:
    settings = load_settings()
    apply_process_settings(settings)
    return create_app(settings)
