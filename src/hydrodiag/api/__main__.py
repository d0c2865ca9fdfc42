"""`python -m hydrodiag.api [--host H] [--port P] [--model-path FILE]` (defaults from the environment)."""

from __future__ import annotations

import argparse

from hydrodiag.api.server import run_server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hydrodiag.api",
                                     description="Serve the hydrodiag HTTP API.")
    parser.add_argument("--host", help="bind address (default API_HOST or 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (default API_PORT or 8002)")
    parser.add_argument("--model-path", help="checkpoint (default MODEL_PATH or models/default.ckpt)")
    args = parser.parse_args(argv)
    run_server(host=args.host, port=args.port, model_path=args.model_path)


if __name__ == "__main__":
    main()
