#!/usr/bin/env bash
# bloodcells on a CUDA GPU, in one go (under 8 minutes on a modern GPU, torch already there):
#   1. installs the package from this working tree (and torch if it is missing);
#   2. trains the lab (5 epochs, batch 8, all three models, all the data) eagerly, with bf16
#      autocast (--amp), and with torch.compile(mode="reduce-overhead") (CUDA graphs);
#   3. prints s/epoch per model (also scaled to the lab's 16,742 images), the fast recipe's
#      time to the lab's 5-epoch accuracy against the lab's own DataLoader loop, GPU memory.
#
#   bash benchmarks/gpu.sh                 # from the repository root
#   DATA=path/to/lab-layout bash benchmarks/gpu.sh
#
# Data: $DATA, else ../shared/data/pbc32 when present, else the built-in synthetic demo set
# (written to a temporary folder). Results: stdout, and $OUT/gpu.json (or /tmp) for the record.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
START=$SECONDS

echo "== GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== install"
if ! "$PYTHON" -c "import torch, torchvision" 2>/dev/null; then
  "$PYTHON" -m pip install -q torch==2.14.1 torchvision==0.29.1
fi
"$PYTHON" -m pip install -q -c constraints.txt -e . || "$PYTHON" -m pip install -q -e .
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA GPU'; print('torch', torch.__version__, torch.cuda.get_device_name())"

export BLOODCELLS_CACHE=${BLOODCELLS_CACHE:-$(mktemp -d)/cache}
if [ -z "${DATA:-}" ]; then
  if [ -d ../shared/data/pbc32/train ]; then
    DATA=../shared/data/pbc32
  else
    DATA=$(mktemp -d)/synthetic
    echo "== no ../shared/data/pbc32: writing the synthetic demo set to $DATA"
    "$PYTHON" -c 'import sys; from bloodcells.cli import main; sys.argv[0] = "bloodcells"; main()' \
      data synth "$DATA" --per-class 800 --test-per-class 200
  fi
fi

echo "== benchmark (data $DATA; $((SECONDS - START)) s so far)"
BUDGET=$((360 - (SECONDS - START)))  # sections start only within it; the last may run ~1 min
RESULT=${OUT:-/tmp}/gpu.json
"$PYTHON" benchmarks/bench_gpu.py --data "$DATA" --budget "$BUDGET" --json "$RESULT"
nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader || true
echo "== done in $((SECONDS - START)) s"
