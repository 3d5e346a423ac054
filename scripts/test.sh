#!/usr/bin/env bash
# Sets up a fresh machine, builds everything, and runs every test: the C++ suite (doctest, via
# ctest; CUDA tests report as skipped without a GPU), the Python tests (pytest) and the Rust
# crate's tests (cargo test, when cargo is installed). Exits non-zero when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
build=${LS_BUILD_DIR:-build}
status=0
ctest --test-dir "$build" --output-on-failure -j "${LS_JOBS:-$(nproc)}" || status=1
if [ -d tests/python ] && ls tests/python/test_*.py >/dev/null 2>&1; then
  LS_TRAIN_LIBRARY="$PWD/$build/libls_train.so" PYTHONPATH="$PWD/bindings/python" \
    ${PYTHON:-python3} -m pytest -q tests/python || status=1
fi
if command -v cargo >/dev/null 2>&1 && [ -f bindings/rust/Cargo.toml ]; then
  LS_TRAIN_LIB_DIR="$PWD/$build" LD_LIBRARY_PATH="$PWD/$build${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    cargo test --quiet --offline --manifest-path bindings/rust/Cargo.toml || status=1
fi
exit $status
