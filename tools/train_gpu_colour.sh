#!/usr/bin/env bash
# The colour model trained on a GPU (preset cifar10-gpu): 4.8M parameters, bf16, in two runs and two evaluations.
#
#   tools/train_gpu_colour.sh                                   # on a GPU: MINUTES + TUNE_MINUTES of training
#   DEVICE=cpu MINUTES=0.2 TUNE_STEPS=3 MODEL_FLAGS="--hidden-size 32 --num-layers 1" tools/train_gpu_colour.sh
#                                                               # the same commands on the CPU, tiny: a smoke run
#
# 1. OUT/jpeg: the training images of the CIFAR-10 JPEG q75 copy for MINUTES minutes (the learning rate decays
#    linearly to 0 as they end), less the files LEAVE_OUT lists: by default the JPEG versions of the 1,000 lossless
#    held-out images (tools/find_jpeg_twins.py), which the copy's train/ folder holds, so that the held-out figures
#    below are of images the model never saw in any form (the run keeps the list as OUT/jpeg/left-out.txt); its
#    test bits/dim on all 10,000 JPEG test images (lossy copy: not comparable with published CIFAR-10 figures).
# 2. OUT/tuned: from those weights, TUNE_STEPS steps of 64 (or TUNE_MINUTES minutes, whichever ends first) on the
#    3,000 lossless training images of the CIFAR-10 subset (tools/make_cifar_holdout.py's split), the learning rate
#    falling linearly from TUNE_LR; its test bits/dim on the subset's 1,020 held-out lossless images. The learning
#    rate and length come from this second run rehearsed on the CPU (docs/guide/models.md): a higher rate and more
#    steps gained more on the lossless images than they cost on the JPEG ones. That rehearsal started from weights
#    trained on the whole JPEG copy, its held-out images' JPEG versions included, so it chose settings but gave
#    no held-out figure.
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
LEAVE_OUT=${LEAVE_OUT-tools/data/cifar10-jpeg-heldout-twins.txt}  # empty: leave nothing out
JPEG="folder:$DATA/cifar10-jpeg.tar.gz"
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

if [[ ! -f "$HOLDOUT/test.npz" ]]; then
    "$PY" tools/make_cifar_holdout.py "$DATA/cifar10-lossless-subset/cifar-10-batches-py" "$HOLDOUT"
fi
# shellcheck disable=SC2086  # MODEL_FLAGS is a list of flags
"$PY" -m image_transformer train --data "$JPEG" --preset cifar10-gpu --device "$DEVICE" --max-minutes "$MINUTES" \
    --eval-every 2000 --eval-images 500 --num-samples 16 --quiet --out "$OUT/jpeg" $MODEL_FLAGS \
    ${LEAVE_OUT:+--leave-out "$LEAVE_OUT"}
"$PY" -m image_transformer train --init "$OUT/jpeg/model" --data "npz:$HOLDOUT" --device "$DEVICE" \
    --precision bf16 --batch-size 64 --lr "$TUNE_LR" --warmup 0 --schedule linear --steps "$TUNE_STEPS" \
    --max-minutes "$TUNE_MINUTES" \
    --eval-every 50 --eval-images 200 --num-samples 16 --quiet --out "$OUT/tuned"
"$PY" -m image_transformer eval "$OUT/jpeg" --data "npz:$HOLDOUT" --device "$DEVICE" -o "$OUT/jpeg/eval-holdout.json"
"$PY" -m image_transformer eval "$OUT/tuned" --data "$JPEG" --device "$DEVICE" -o "$OUT/tuned/eval-jpeg-test.json"
