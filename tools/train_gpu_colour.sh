#!/usr/bin/env bash
# The colour model trained on a GPU (preset cifar10-gpu): 4.8M parameters, bf16, in two runs and two evaluations.
#
#   tools/train_gpu_colour.sh                                   # on a GPU: MINUTES + TUNE_MINUTES of training
#   DEVICE=cpu MINUTES=0.2 TUNE_STEPS=3 MODEL_FLAGS="--hidden-size 32 --num-layers 1" tools/train_gpu_colour.sh
#                                                               # the same commands on the CPU, tiny: a smoke run
#
# 1. OUT/jpeg: the 50,000 training images of the CIFAR-10 JPEG q75 copy for MINUTES minutes (the learning rate
#    decays linearly to 0 as they end); its test bits/dim on all 10,000 JPEG test images (lossy copy: not
#    comparable with published CIFAR-10 figures).
# 2. OUT/tuned: from those weights, TUNE_STEPS steps of 64 (or TUNE_MINUTES minutes, whichever ends first) on the
#    3,000 lossless training images of the CIFAR-10 subset (tools/make_cifar_holdout.py's split), the learning rate
#    falling linearly from TUNE_LR; its test bits/dim on the subset's 1,020 held-out lossless images. The learning
#    rate and length come from this second run rehearsed on the CPU from the JPEG-trained weights of the shipped
#    `cifar10` (docs/guide/models.md): 1e-3 beat 2e-4, and 300 steps beat 150, 600 beat 300 on the lossless images
#    by more than they cost on the JPEG ones (3.695, 3.620, 3.562 against 3.217, 3.242, 3.268).
# 3. Each model evaluated on the other's test set too: OUT/jpeg/eval-holdout.json, OUT/tuned/eval-jpeg-test.json.
#
# DATA holds cifar10-jpeg.tar.gz and, unless HOLDOUT names the split already made, cifar10-lossless-subset/;
# PYTHON is the interpreter with the package installed (default python3).
set -euo pipefail
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/gpu-colour}
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-4}
TUNE_STEPS=${TUNE_STEPS:-600}
TUNE_MINUTES=${TUNE_MINUTES:-1}
TUNE_LR=${TUNE_LR:-1e-3}
HOLDOUT=${HOLDOUT:-$OUT/cifar-holdout}
MODEL_FLAGS=${MODEL_FLAGS:-}
JPEG="folder:$DATA/cifar10-jpeg.tar.gz"
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

if [[ ! -f "$HOLDOUT/test.npz" ]]; then
    "$PY" tools/make_cifar_holdout.py "$DATA/cifar10-lossless-subset/cifar-10-batches-py" "$HOLDOUT"
fi
# shellcheck disable=SC2086  # MODEL_FLAGS is a list of flags
"$PY" -m image_transformer train --data "$JPEG" --preset cifar10-gpu --device "$DEVICE" --max-minutes "$MINUTES" \
    --eval-every 2000 --eval-images 500 --num-samples 16 --quiet --out "$OUT/jpeg" $MODEL_FLAGS
"$PY" -m image_transformer train --init "$OUT/jpeg/model" --data "npz:$HOLDOUT" --device "$DEVICE" \
    --precision bf16 --batch-size 64 --lr "$TUNE_LR" --warmup 0 --schedule linear --steps "$TUNE_STEPS" \
    --max-minutes "$TUNE_MINUTES" \
    --eval-every 50 --eval-images 200 --num-samples 16 --quiet --out "$OUT/tuned"
"$PY" -m image_transformer eval "$OUT/jpeg" --data "npz:$HOLDOUT" --device "$DEVICE" -o "$OUT/jpeg/eval-holdout.json"
"$PY" -m image_transformer eval "$OUT/tuned" --data "$JPEG" --device "$DEVICE" -o "$OUT/tuned/eval-jpeg-test.json"
