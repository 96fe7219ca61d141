#!/usr/bin/env bash
# Create .venv (if missing) and install iprune_tf with its test and export extras.
# As root with apt-get, also installs the missing Debian packages: the real Fashion-MNIST (offline
# data set) and the toolchains the C export is verified with (ARM gcc + newlib, QEMU) and the Verilog
# LUT export is simulated and synthesized with (Icarus Verilog, Verilator, Yosys).
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PACKAGES="dataset-fashion-mnist gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm iverilog verilator yosys"
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  MISSING=$(for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$MISSING" ]; then
    (apt-get update -qq && apt-get install -y -qq $MISSING) >/dev/null 2>&1 \
      || echo "note: could not install" $MISSING"; tests that need them will be skipped" >&2
  fi
fi
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,docs,export,fpga]"
