"""Benchmark harness: hydrodiag against plain FastAPI and LitServe on the same model and payload.

Entry point: `python -m bench.run` (see `make bench`, `make bench-smoke` and docs/BENCHMARKS.md).
"""
