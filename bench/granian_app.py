"""hydrodiag's app for the Granian server (measured against uvicorn, not kept: bench/tried.md).

Applies what `hydrodiag serve` applies to the process (torch threads, GIL switch interval, garbage
collector thresholds, logging) and returns the same FastAPI app, so that only the HTTP server differs:

    .venv/bin/pip install granian==2.8.7
    MODEL_PATH=models/default.ckpt .venv/bin/granian --interface asgi --factory --port 8112 \
        --loop uvloop --no-ws bench.granian_app:make_app
"""

from __future__ import annotations

import gc
import sys

from fastapi import FastAPI

from hydrodiag.api.app import create_app
from hydrodiag.api.logconfig import configure_logging
from hydrodiag.settings import load_settings


def make_app() -> FastAPI:
    import torch  # after hydrodiag (its import keeps torch._dynamo out of the process, as the server's does)

    settings = load_settings()
    configure_logging(settings.log_level)
    threads = settings.resolved_torch_threads
    if threads is not None:
        torch.set_num_threads(threads)
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000.0)
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, settings.gc_gen2_threshold)
    return create_app(settings)
