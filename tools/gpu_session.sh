#!/usr/bin/env bash
# The GPU checks in one command, for a machine with one NVIDIA GPU and this repository installed
# (pip install --no-deps --no-build-isolation -e .): about 9 minutes on an H200.
#
#   OUT=gpu-results DATA=../shared/data tools/gpu_session.sh
#
# 1. benchmarks/gpu.py alone on the GPU (BENCH_S seconds at most; rows that would end later are skipped):
#    OUT/gpu.md, the table kept in docs/results/gpu.md, and OUT/bench.log.
# 2. The CUDA tests (tests/test_cuda.py) beside the colour model's training (tools/train_gpu_colour.sh, MINUTES
#    minutes on the CIFAR-10 JPEG copy, then a short fine-tuning on the lossless subset): OUT/tests.log,
#    OUT/train.log and the runs in OUT/colour (no optimizer checkpoints kept; half-precision weights beside each
#    model/).
#
# DATA holds cifar10-jpeg.tar.gz and a held-out split of the lossless subset (HOLDOUT, made by
# tools/make_cifar_holdout.py when missing). PYTHON is the interpreter with the package (default python3).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu-results}
DATA=${DATA:-../shared/data}
HOLDOUT=${HOLDOUT:-$OUT/cifar-holdout}
BENCH_S=${BENCH_S:-215}
MINUTES=${MINUTES:-3.5}
PY=${PYTHON:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1

stamp benchmark
timeout "$BENCH_S" "$PY" benchmarks/gpu.py --budget-minutes "$("$PY" -c "print(($BENCH_S - 25) / 60)")" \
    --markdown "$OUT/gpu.md" > "$OUT/bench.log" 2>&1
echo "benchmark: exit status $?"

stamp "CUDA tests beside the colour model's training"
(timeout 240 "$PY" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider -rfEs > "$OUT/tests.log" 2>&1
 echo "tests: exit status $?" >> "$OUT/tests.log") &
DATA=$DATA HOLDOUT=$HOLDOUT OUT=$OUT/colour MINUTES=$MINUTES TUNE_STEPS=150 PYTHON=$PY \
    timeout 360 bash tools/train_gpu_colour.sh > "$OUT/train.log" 2>&1
echo "training: exit status $?"
wait

stamp "half-precision weights, optimizer checkpoints removed"
"$PY" - "$OUT/colour" <<'EOF'
import pathlib, sys
import safetensors.torch
for weights in pathlib.Path(sys.argv[1]).glob("*/model/model.safetensors"):
    state = {k: v.half() if v.is_floating_point() else v for k, v in safetensors.torch.load_file(str(weights)).items()}
    safetensors.torch.save_file(state, str(weights.parent.parent / "model-fp16.safetensors"))
EOF
rm -f "$OUT"/colour/*/checkpoint*.pt
stamp done
echo "===== benchmark"; tail -n 45 "$OUT/bench.log"
echo "===== tests"; tail -n 25 "$OUT/tests.log"
echo "===== training"; grep -v "eval:" "$OUT/train.log" | tail -n 25
