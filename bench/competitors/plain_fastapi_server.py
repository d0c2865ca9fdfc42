"""Baseline (a): the model behind a plain FastAPI handler, one forward pass per request, no batching.

This is what a user writes first: a pydantic request model, an `async def` handler that builds the
graph and runs the model inline, a dict as the response, served by uvicorn (uvloop + httptools, one
process). Inline forward on the event loop is the fastest plain variant at low load (no thread
hand-off); under concurrency requests simply queue on the loop.

Run: <env python> bench/competitors/plain_fastapi_server.py --model-path M --port P
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `bench` importable when run as a file

from bench.competitors.common import ModelWrapper
from bench.payloads import UCI_SENSORS
from hydrodiag.errors import HydrodiagError


class PredictRequest(BaseModel):
    equipment_id: str
    topology_id: str | None = None
    sensor_data: dict[str, list[float]]


def create_app(model_path: str) -> FastAPI:
    wrapper = ModelWrapper(model_path)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        wrapper.warmup(
            {
                "equipment_id": "warmup",
                "topology_id": "uci_test_rig",
                "sensor_data": {name: [float(i % 7) for i in range(60)] for name in UCI_SENSORS},
            }
        )
        yield

    app = FastAPI(title="plain FastAPI baseline", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "healthy", "model_loaded": True}

    @app.post("/predict")
    async def predict(request: PredictRequest) -> dict[str, Any]:
        body = request.model_dump()
        try:
            graph, layout = wrapper.graph(body)
        except HydrodiagError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        [output] = wrapper.forward([graph])
        return wrapper.response(body, layout, output)

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-path", default=os.environ.get("MODEL_PATH", "models/default.ckpt"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    args = parser.parse_args()
    uvicorn.run(create_app(args.model_path), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
