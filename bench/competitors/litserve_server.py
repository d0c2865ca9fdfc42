"""Baseline (b): the model served by LitServe 0.2.19 with its batching, 2 inference workers.

LitServe's architecture: uvicorn API-server processes parse HTTP and put requests on a
multiprocessing queue; inference worker processes collect up to `max_batch_size` requests within
`batch_timeout` seconds, run decode_request -> batch -> predict -> unbatch -> encode_response, and
send the answers back through a response queue. `batch_timeout` defaults here to 2 ms, the same
value as hydrodiag's MAX_WAIT_MS, so both servers get the same batching knob.

Run (from its own venv, see bench/competitors/envs.py):
  <env python> bench/competitors/litserve_server.py --model-path M --port P [--workers 2]
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation at run time to
# decide how FastAPI parses the body, and a string annotation would turn it into a query parameter.
import argparse
import os
import sys
from pathlib import Path
from typing import Any

import litserve as ls
from fastapi import HTTPException

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `bench` importable when run as a file

from bench.competitors.common import ModelWrapper
from bench.payloads import UCI_SENSORS
from hydrodiag.errors import HydrodiagError

Decoded = tuple[dict[str, Any], Any, Any]  # request body, graph, layout


class HydrodiagLitAPI(ls.LitAPI):
    def __init__(self, model_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_path = model_path

    def setup(self, device: str) -> None:
        self.batches = self.items = 0
        self.wrapper = ModelWrapper(self.model_path)
        sensor_data = {name: [float(i % 7) for i in range(60)] for name in UCI_SENSORS}
        self.wrapper.warmup(
            {"equipment_id": "warmup", "topology_id": "uci_test_rig", "sensor_data": sensor_data},
            sizes=(1, self.max_batch_size),
        )

    def decode_request(self, request: dict[str, Any]) -> Decoded:
        try:
            graph, layout = self.wrapper.graph(request)
        except HydrodiagError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        return request, graph, layout

    def batch(self, inputs: list[Decoded]) -> list[Decoded]:
        return inputs

    def predict(self, x: list[Decoded]) -> list[tuple[dict[str, Any], Any, Any]]:
        outputs = self.wrapper.forward([graph for _, graph, _ in x])
        self.batches += 1
        self.items += len(x)
        if self.batches % 50 == 0:  # the harness reads the last line of each worker from the log
            print(
                f"BENCH_BATCHES pid={os.getpid()} batches={self.batches} items={self.items}",
                file=sys.stderr,
                flush=True,
            )
        return [(body, layout, out) for (body, _, layout), out in zip(x, outputs, strict=True)]

    def unbatch(self, output: list[Any]) -> list[Any]:
        return output

    def encode_response(self, output: tuple[dict[str, Any], Any, Any]) -> dict[str, Any]:
        body, layout, out = output
        return ModelWrapper.response(body, layout, out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-path", default=os.environ.get("MODEL_PATH", "models/default.ckpt"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8103)
    parser.add_argument("--workers", type=int, default=2, help="inference workers (workers_per_device)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout", type=float, default=0.002, help="seconds")
    args = parser.parse_args()
    api = HydrodiagLitAPI(args.model_path, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=args.workers)
    server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
