#!/usr/bin/env bash
# The main job: set up, then train -> prune (K=8) -> retrain -> report -> export the paper's MNIST MLP
# (BinaryConnect, deterministic) on the real Fashion-MNIST, offline.
#   bash scripts/main_job.sh            # the full recipe recorded in bench/results/ (11 min 41 s on 2 quiet cores, 2026-12-05)
#   QUICK=1 bash scripts/main_job.sh    # a 3-epoch smoke run of the same pipeline (~3 min)
# Extra arguments go to `iprune train` (e.g. --inputs 7). Re-running resumes the run in RUN_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
RUN_DIR="${RUN_DIR:-runs/fashion_mnist_k8}"
if [ "${QUICK:-0}" = 1 ]; then
  RUN_DIR="${RUN_DIR}_quick"
  EPOCHS=(--epochs-dense 1 --epochs-prune 1 --epochs-retrain 1 --frequency 50)
else
  EPOCHS=(--epochs-dense 10 --epochs-prune 15 --epochs-retrain 10)
fi
RESUME=()
[ -f "$RUN_DIR/run.json" ] && RESUME=(--resume)
.venv/bin/iprune train --preset mnist --flavour binaryconnect_det --inputs 8 --data fashion_mnist \
  --retrain-lr cosine --last-halving 0.6 "${EPOCHS[@]}" --out "$RUN_DIR" "${RESUME[@]}" "$@"
.venv/bin/iprune report "$RUN_DIR"
.venv/bin/iprune export "$RUN_DIR" --mode float --mode int8 --mode lce --mode sparse --mode sparse_int8 --mode c --c-array --overwrite
