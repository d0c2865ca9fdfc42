#!/usr/bin/env bash
# The checks a GPU host runs (none of them can run in CI, which has no GPU):
#   tests/test_cuda.py (DEVICE=auto, trace / eager / torch.compile on the GPU from pinned memory,
#   the engine and the real server), then the model-only benchmark on the GPU (trace, compile) and
#   on one CPU core, with a simulated excavator window (no data set needed).
# Usage: make cuda-check, or PYTHON=python3 bench/cuda_check.sh OUT_DIR
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-bench/results/tmp/cuda}
SIZES=${SIZES:-1,8,32,128,512}
mkdir -p "$OUT"
status=0

"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'device',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)" | tee "$OUT/device.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >> "$OUT/device.txt" 2>&1

"$PY" -m pytest -v -rs -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log" || status=1

"$PY" -c "from pathlib import Path; from bench.payloads import excavator_window, write_bodies
payload, note = excavator_window(); assert payload is not None, note
write_bodies(payload, Path('$OUT'), singles=1, batch=1)"
for run in "cuda trace:--device cuda" "cuda compile:--device cuda --compile" "cpu trace:--device cpu"; do
  name=${run%%:*}; options=${run#*:}
  echo "== model only, $name"
  # shellcheck disable=SC2086
  "$PY" -m bench.model_bench --model-path models/default.ckpt --bodies "$OUT/excavator_window.single.ndjson" \
      --batch-sizes "$SIZES" --min-time 1 $options > "$OUT/model_${name/ /_}.log" 2>&1 || status=1
  "$PY" - "$OUT/model_${name/ /_}.log" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
line = next((l for l in text.splitlines() if l.startswith("BENCH_JSON ")), None)
if line is None:
    print(text[-3000:]); sys.exit(0)
result = json.loads(line.removeprefix("BENCH_JSON "))
print("load", result["load"])
for row in result["runs"]:
    print(f'batch {row["batch_size"]:>4}: forward p50 {row["forward_ms_p50"]:8.3f} ms, whole path p50 '
          f'{row["latency_ms_p50"]:8.3f} ms, {row["samples_per_s"]:>10.1f} samples/s '
          f'(forward only {row["forward_samples_per_s"]:.1f}), stages {row["stages_ms_p50"]}')
PY
done
exit $status
