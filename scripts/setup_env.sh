#!/usr/bin/env bash
# Create .venv (if missing) and install iprune_tf with its test and export extras.
# Also installs the real Fashion-MNIST from Debian (offline data set) when apt-get is usable.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
    || echo "note: could not install dataset-fashion-mnist; tests that need it will be skipped" >&2
fi
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,export]"
