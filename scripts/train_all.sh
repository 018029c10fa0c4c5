#!/usr/bin/env bash
# Train and evaluate every detector in one run, writing checkpoints and reports under OUT.
#   scripts/train_all.sh OUT [extra `python -m train` options]
# On a GPU the networks use the full recipe below; SMOKE=1 makes it a tiny run (any machine)
# to check the script end to end before spending accelerator time on it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/train_all.sh OUT [options]}
shift
py=${PYTHON:-python3}
if [ "${SMOKE:-0}" = 1 ]; then
  limit=(--limit 400 --epochs 1)
  eval_limit=(--limit 500)
else
  limit=()
  eval_limit=()
fi
# The evaluation reads the test split from the data folder the training steps read.
eval_data=()
previous=
for arg in "$@"; do
  [ "$previous" = --data ] && eval_data=(--data "$arg")
  case "$arg" in --data=*) eval_data=("$arg") ;; esac
  previous=$arg
done
export PYTHONUNBUFFERED=1
start=$(date +%s)
"$py" -m train hog_svm --out "$out/checkpoints" "${limit[@]}" "$@"
"$py" -m train cnn --out "$out/checkpoints" --resume "${limit[@]}" "$@"
# The networks: 30 epochs over all of train, the learning rate cut tenfold every 10, at 32x32
# on the images' own pixels: random resized crops blur the traces they look for (see the
# README), so ResNet-50 drops the paper's 24x24 crop too; 2-pixel shifts, flips, and half of
# the images changed as uploads are (the robustness suite's families).
net_args=(--out "$out/checkpoints" --resume --epochs 30 --batch-size 128 --step-size 10 --crop 32 --crop-scale 1 1
          --translate 2 --upload-augment 0.5)
for net in resnet50 vgg16_bn densenet121; do
  "$py" -m train "$net" "${net_args[@]}" "${limit[@]}" "$@"
done
# The network designed for 32x32 inputs, with its registry recipe; then the committee of all.
"$py" -m train native32 --out "$out/checkpoints" --resume "${limit[@]}" "$@"
"$py" -m train committee --out "$out/checkpoints" "${limit[@]}" "$@"
"$py" -m train.evaluate --checkpoints "$out/checkpoints" --reports "$out/reports" "${eval_data[@]}" "${eval_limit[@]}"
echo "trained and evaluated everything in $(( $(date +%s) - start )) s"
