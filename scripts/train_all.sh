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
export PYTHONUNBUFFERED=1
start=$(date +%s)
"$py" -m train hog_svm --out "$out/checkpoints" "${limit[@]}" "$@"
"$py" -m train cnn --out "$out/checkpoints" --resume "${limit[@]}" "$@"
# The networks: 30 epochs over all of train, the learning rate cut tenfold every 10. At 32x32
# they see the images' own pixels with flips only (resampling blurs the traces they look for);
# ResNet-50 keeps the paper's 24x24 crop, with a milder range of crop sizes.
net_args=(--out "$out/checkpoints" --resume --epochs 30 --batch-size 128 --step-size 10)
"$py" -m train resnet50 "${net_args[@]}" --crop-scale 0.5 1 "${limit[@]}" "$@"
"$py" -m train vgg16_bn "${net_args[@]}" --crop-scale 1 1 "${limit[@]}" "$@"
"$py" -m train densenet121 "${net_args[@]}" --crop-scale 1 1 "${limit[@]}" "$@"
"$py" -m train.evaluate --checkpoints "$out/checkpoints" --reports "$out/reports" "${eval_limit[@]}"
echo "trained and evaluated everything in $(( $(date +%s) - start )) s"
