#!/usr/bin/env bash
# Rebuild every shipped detector from scratch by its recorded chain of stages (teachers first),
# then the committee, the scope score and the reports, all under OUT: `python -m train replay --all` (docs/reproduce.md).
#   scripts/train_all.sh OUT [replay options: --profile gpu, --data DIR, --device cuda, --threads N]
# SMOKE=1 runs the same chains on tiny sizes (any machine, minutes) to check it end to end first.
# Every stage runs with the trainer's --resume: after a crash the same command again keeps what
# finished and continues the rest.
set -euo pipefail
out=${1:?usage: scripts/train_all.sh OUT [replay options]}
shift
# The repository's packages from wherever this runs, so that OUT, --data and any other path
# given mean what they mean in the caller's folder.
PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH PYTHONUNBUFFERED=1
smoke=()
if [ "${SMOKE:-0}" = 1 ]; then
  smoke=(--smoke)
fi
exec "${PYTHON:-python3}" -m train replay --all --out "$out" "${smoke[@]}" "$@"
