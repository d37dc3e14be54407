#!/usr/bin/env bash
# The checks to run where a GPU is lent, as one prepared command (the device tool gives a task about 15 minutes in
# all): the GPU cases of the test suite, the GPU rows of benchmarks/distributed.py (bare loop beside vgm train in
# fp32, bf16 and compiled, 20 epochs) and a glow run in a wall-clock budget. Logs go to $OUT (default gpu-logs).
#   DATA=path/to/mnist10k GLOW_MINUTES=5 bash benchmarks/gpu_session.sh
set -uo pipefail
out=${OUT:-gpu-logs}
data=${DATA:-../shared/data/mnist10k}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$out/gpu.txt" 2>&1
python -c "import torch; print(torch.__version__, torch.cuda.is_available())" >> "$out/gpu.txt" 2>&1
python -m pytest -q -m gpu tests/test_gpu.py > "$out/gpu_tests.log" 2>&1; echo "gpu tests: exit $?" >> "$out/gpu.txt"
python benchmarks/distributed.py --data-dir "$data" --gpu-only --epochs 20 > "$out/distributed_gpu.log" 2>&1
python benchmarks/image_flows.py --data-dir "$data" --device cuda --minutes "${GLOW_MINUTES:-5}" \
    --set width=128 --save-dir "$out/flows" > "$out/glow_gpu.log" 2>&1
tail -n 3 "$out"/*.log
