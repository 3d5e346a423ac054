#!/usr/bin/env bash
# Installs what building and testing ls_train needs on a fresh Debian/Ubuntu machine:
# the compiler toolchain, CMake, Ninja, doctest, OpenBLAS, DLPack headers, and pytest/numpy.
# The CUDA toolkit is optional: when nvcc is on PATH (or in /usr/local/cuda) the CUDA backend
# is built too. Safe to run again: it installs only what is missing.
set -euo pipefail

need_apt=()
for pkg in build-essential cmake ninja-build pkg-config doctest-dev libopenblas-dev libdlpack-dev python3 python3-pip; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

PY=${PYTHON:-python3}
if ! $PY -c "import pytest, numpy" >/dev/null 2>&1; then
  $PY -m pip install -q pytest numpy || $PY -m pip install -q --break-system-packages pytest numpy
fi
