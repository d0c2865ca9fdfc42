"""Command line: serve / train / evaluate / simulate / bench.

Each command only parses options and calls into the layer that owns the work.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="hydrodiag: diagnose hydraulic machines with a temporal graph neural network.",
                  no_args_is_help=True, add_completion=False)


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default API_HOST or 0.0.0.0)."),
    port: int | None = typer.Option(None, help="Port (default API_PORT or 8002)."),
    model_path: Path | None = typer.Option(None, help="Checkpoint to serve (default MODEL_PATH)."),
) -> None:
    """Serve the HTTP API."""
    from hydrodiag.api.server import run_server

    run_server(host=host, port=port, model_path=model_path)


if __name__ == "__main__":
    app()
