#!/usr/bin/env bash
# The GPU checks in one go: the GPU tests, the train command eager and captured, notebook 8's GPU cells,
# then benchmarks/gpu.py. Logs go to the folder $OUT names (./gpu-logs by default); the output ends with
# the summary tables.
#   bash benchmarks/gpu_check.sh            (from the repository root; CuPy, a CUDA device, PyTorch optional)
set -uo pipefail
OUT=${OUT:-gpu-logs}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
date -u
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader
python3 -c "import sys, numpy, cupy; print('python', sys.version.split()[0], '| numpy', numpy.__version__, '| cupy', cupy.__version__)"
python3 -c "import torch; print('torch', torch.__version__)" 2>/dev/null || echo "no torch"
echo "== GPU tests: python3 -m pytest -m gpu"
python3 -m pytest -m gpu -q -rs --tb=short -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" | tail -n 25
echo "== train on cuda, eager then --graph"
for extra in "" "--graph"; do
  python3 -m minigrad train --device cuda --quiet $extra 2>&1 | head -n 1
done
echo "== notebook 8 as a script (its GPU cells)"
python3 benchmarks/notebook_as_script.py notebooks/08-on-the-gpu.ipynb 2>&1 | tee "$OUT/notebook08.log" | grep -A3 -E "device peak|losses identical"
echo "== python3 benchmarks/gpu.py ${GPU_BENCH_ARGS:-}"
python3 benchmarks/gpu.py ${GPU_BENCH_ARGS:-} 2>&1 | tee "$OUT/gpu_bench.log"
