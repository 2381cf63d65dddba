#!/usr/bin/env bash
# The GPU checks in one command, for a machine with one NVIDIA GPU and this repository installed
# (pip install --no-deps --no-build-isolation -e .): BENCH_S + TESTS_S + TRAIN_S seconds at most (140 + 180 + 220 by
# default; 15 s more if the tests must be killed), and the packing: with the install, inside a 10-minute command
# (tests/test_gpu_scripts.py adds them up); limits, not yet timed on a GPU.
#
#   OUT=gpu-results DATA=../shared/data tools/gpu_session.sh
#
# 1. benchmarks/gpu.py alone on the GPU (BENCH_S seconds at most; rows that would end later are skipped):
#    OUT/gpu.md, the table for docs/results/gpu.md (a page to write from the first GPU's run), and OUT/bench.log.
# 2. The CUDA tests (tests/test_cuda.py) alone on the GPU, TESTS_S seconds at most: their timings and compiles share
#    it with nothing, and the torchrun test's processes with no training. OUT/tests.log, and OUT/tests.xml (JUnit:
#    every test's outcome and seconds); at the budget pytest is interrupted (SIGINT), so the tests that ran are
#    still reported there, and the rest are missing from it.
# 3. The colour model's training (tools/train_gpu_colour.sh, MINUTES minutes on the CIFAR-10 JPEG copy less the
#    held-out images' JPEG versions (its LEAVE_OUT), then
#    TUNE_MINUTES on the lossless subset, TRAIN_S seconds at most with data loading and evaluations): OUT/train.log.
# 4. What is kept of the two runs (in WORK): each model's weights in half precision, OUT/jpeg-fp16.safetensors and
#    OUT/tuned-fp16.safetensors, and the rest of both run folders (configs, evaluations, metrics, samples; no
#    optimizer checkpoints, no float32 weights) with nvidia-smi's report in OUT/runs.tar.gz. To use a model, unpack
#    the archive and put its fp16 file in as RUN/model/model.safetensors (loading restores float32).
# OUT ends with 8 files and no folder: few and small enough for a machine that hands back only a few files.
#
# DATA holds cifar10-jpeg.tar.gz and a held-out split of the lossless subset (HOLDOUT, made by
# tools/make_cifar_holdout.py when missing). PYTHON is the interpreter with the package (default python3).
# On a lent machine that sees only this repository: put the data in an ignored folder that travels with it,
#   mkdir .gpu && echo /.gpu/ >> .git/info/exclude && cp ../shared/data/cifar10-jpeg.tar.gz .gpu/
#   python tools/make_cifar_holdout.py ../shared/data/cifar10-lossless-subset/cifar-10-batches-py .gpu/cifar-holdout
# (31 MB), then there, with .gpu carried:
#   python3 -m pip install -q --no-deps --no-build-isolation -e . && DATA=.gpu HOLDOUT=.gpu/cifar-holdout \
#   WORK=/tmp/gpu-session bash tools/gpu_session.sh
# A rehearsal on the CPU at tiny sizes (what tests/test_gpu_scripts.py runs):
#   BENCH_FLAGS="--device cpu --quick --no-compile" DEVICE=cpu MINUTES=0.05 TUNE_MINUTES=0.02 \
#   MODEL_FLAGS="--hidden-size 16 --num-layers 1 --num-heads 1 --ffn-size 16" tools/gpu_session.sh
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu-results}
DATA=${DATA:-../shared/data}
WORK=${WORK:-$(mktemp -d)}
HOLDOUT=${HOLDOUT:-$WORK/cifar-holdout}
BENCH_S=${BENCH_S:-140}
BENCH_FLAGS=${BENCH_FLAGS:-}
TESTS_S=${TESTS_S:-180}
TRAIN_S=${TRAIN_S:-220}  # the training's minutes and about 80 s for its data, start-up and four evaluations
MINUTES=${MINUTES:-2}
TUNE_MINUTES=${TUNE_MINUTES:-0.4}
PY=${PYTHON:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$OUT" "$WORK"
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi > "$WORK/nvidia-smi.txt" 2>&1

stamp benchmark
# shellcheck disable=SC2086  # BENCH_FLAGS is a list of flags
timeout "$BENCH_S" "$PY" benchmarks/gpu.py --budget-minutes "$("$PY" -c "print(($BENCH_S - 25) / 60)")" \
    --markdown "$OUT/gpu.md" $BENCH_FLAGS > "$OUT/bench.log" 2>&1
echo "benchmark: exit status $?"

stamp "CUDA tests alone, $TESTS_S s at most"
# SIGINT at the budget: pytest stops the test it is in and still writes the JUnit file; KILL 15 s later if it hangs
timeout -s INT -k 15 "$TESTS_S" "$PY" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider -rfEs \
    --junitxml="$OUT/tests.xml" > "$OUT/tests.log" 2>&1
status=$?
echo "tests: exit status $status" >> "$OUT/tests.log"
echo "tests: exit status $status$([[ $status == 124 || $status == 137 ]] && echo " (stopped at the $TESTS_S s budget)")"

stamp "the colour model's training, $TRAIN_S s at most"
DATA=$DATA HOLDOUT=$HOLDOUT OUT=$WORK/colour MINUTES=$MINUTES TUNE_MINUTES=$TUNE_MINUTES PYTHON=$PY \
    timeout "$TRAIN_S" bash tools/train_gpu_colour.sh > "$OUT/train.log" 2>&1
echo "training: exit status $?"

stamp "half-precision weights and the run folders"
"$PY" - "$WORK/colour" "$OUT" <<'EOF'
import pathlib, sys
import safetensors.torch
runs, out = map(pathlib.Path, sys.argv[1:])
for weights in runs.glob("*/model/model.safetensors"):
    state = {k: v.half() if v.is_floating_point() else v for k, v in safetensors.torch.load_file(str(weights)).items()}
    safetensors.torch.save_file(state, str(out / f"{weights.parent.parent.name}-fp16.safetensors"))
    print(f"{weights.parent.parent.name}: {sum(v.numel() for v in state.values()):,} parameters")
EOF
tar -czf "$OUT/runs.tar.gz" -C "$WORK" --exclude='checkpoint*.pt' --exclude='model.safetensors' \
    --exclude='cifar-holdout' nvidia-smi.txt colour
stamp done
ls -l "$OUT"
echo "===== benchmark"; tail -n 45 "$OUT/bench.log"
echo "===== tests"; tail -n 25 "$OUT/tests.log"
echo "===== training"; grep -v "eval:" "$OUT/train.log" | tail -n 25
