# Two commands do everything on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DATA ?= ../shared/data/uci_hydraulic_1hz

.PHONY: setup lock run test lint train evaluate bench bench-one-core bench-smoke cuda-check clean

setup: $(VENV)/.installed

# torch is pinned first so pip takes the CPU build on this machine's disk, never a CUDA download.
# constraints.txt fixes every other package's version (memory and speed depend on them).
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# After an upgrade (pip install -U ... in .venv): write the venv's versions back to constraints.txt,
# keeping its header; re-run make test and make bench before committing it.
lock: setup
	{ grep '^#' constraints.txt; $(BIN)/pip freeze --exclude-editable | sed 's/+cpu$$//' | sort -f; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

run: setup
	$(BIN)/hydrodiag serve

test: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src/hydrodiag

# Full training of the shipped checkpoint (see docs/MODEL_CARD.md); minutes, not part of `make test`.
train: setup
	$(BIN)/hydrodiag train --data $(DATA) --out models/default.ckpt --epochs 120 --simulated-windows 100 --threads 1 \
		--sensor-dropout 0.15 --raw-timing --model-version 2.2.0

# Cross-validation of the same recipe (tens of minutes on 2 cores); finished folds are cached, so
# an interrupted run resumes. The summary is stored in the shipped checkpoint's metadata.
evaluate: setup
	$(BIN)/hydrodiag evaluate --data $(DATA) --out docs/evaluation --epochs 120 --simulated-windows 100 \
		--sensor-dropout 0.15 --raw-timing --holdout-topology crane --jobs 2 --attach-to models/default.ckpt

# Benchmark against plain FastAPI and LitServe (docs/BENCHMARKS.md); under 10 minutes, loopback only.
# The first run also builds the competitors' environments under bench/.envs/ (a few minutes).
bench: setup
	$(BIN)/python -m bench.run --data $(DATA) $(BENCH_ARGS)

# The same benchmark with every server confined to the core the load generator leaves free (one core
# here), as runs before 2026-12-04 were measured: docs/BENCHMARKS_one_core.md.
bench-one-core: setup
	$(BIN)/python -m bench.run --data $(DATA) --server-cpus rest --out-json bench/results/one_core.json \
		--doc docs/BENCHMARKS_one_core.md $(BENCH_ARGS)

# Seconds-long harness check for CI: one level, no competitors, writes bench/results/tmp/smoke.json only.
bench-smoke: setup
	$(BIN)/python -m bench.run --smoke --data $(DATA) --out-json bench/results/tmp/smoke.json $(BENCH_ARGS)

# On a GPU host (a CUDA build of torch in .venv): tests/test_cuda.py and the model-only benchmark on the
# GPU; writes bench/results/tmp/cuda/. CI has no GPU and skips those tests.
cuda-check: setup
	PYTHON=$(BIN)/python bench/cuda_check.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
