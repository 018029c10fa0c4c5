#!/usr/bin/env bash
# One call on a lent GPU machine (the device tool): a network's GPU profile
# (python -m train replay NAME --profile gpu), resumable across calls, its stage files and log
# written to $OUT. Every finished epoch is kept, so a call cut at BUDGET seconds is continued by
# the next one. docs/reproduce.md, "The GPU profile", says how to run it.
#
#   SMOKE=1 OUT=/tmp/out scripts/device_gpu_profile.sh native32   # the same on tiny sizes, on the CPU first
#   scripts/device_gpu_profile.sh NAME [replay options...]        # e.g. --threads 1
set -euo pipefail
detector=${1:-native32}
shift $(( $# > 0 ))
out=${OUT:?set OUT to the folder the files go back from}
budget=${BUDGET:-480}    # seconds of training in this call (a device command runs at most 600)
python=${PYTHON:-python3}  # the device's python3 holds torch
data=${CIFAKE_DATA:-data/cifake}
run=${RUN:-runs/gpu${SMOKE:+_smoke}}  # the replay's folder: carry it to the next call
smoke=()
[ -n "${SMOKE:-}" ] && smoke=(--smoke)

[ -d train ] || { echo "run this from the repository root" >&2; exit 2; }
[ -d "$data" ] || { echo "no CIFAKE at $data: copy ../shared/data/cifake/*.npz there and carry it" >&2; exit 2; }
mkdir -p "$out"
"$python" -c 'import torch; print("torch", torch.__version__, "on", torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU")'
status=0
PYTHONUNBUFFERED=1 timeout -k 30 "$budget" "$python" -m train replay "$detector" --profile gpu --out "$run" \
    --data "$data" --no-reports ${smoke[@]+"${smoke[@]}"} "$@" > "$out/log.txt" 2>&1 || status=$?
tr '\r' '\n' < "$out/log.txt" | grep -E "^replay|epoch [0-9]+/|rror" || true
# $OUT/stages/NAME-KEY/: the checkpoint once finished, else the resume state of the last finished epoch
[ -d "$run/stages" ] && cp -r "$run/stages" "$out/"
if [ "$status" = 124 ] || [ "$status" = 137 ]; then  # TERM at the budget, KILL 30 s later
    echo "stopped at the budget of ${budget}s: carry $run back and run this again to continue"
    exit 0
fi
exit "$status"
