#!/usr/bin/env bash
# Configures and builds ls_train into ${LS_BUILD_DIR:-build} (Release). CUDA is built when nvcc
# is found; set LS_CUDA_ARCHS to choose architectures (default: CMake's 80;90).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${LS_BUILD_DIR:-build}
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
args=(-S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=${LS_BUILD_TYPE:-Release})
[ -n "${LS_CUDA_ARCHS:-}" ] && args+=("-DCMAKE_CUDA_ARCHITECTURES=${LS_CUDA_ARCHS}")
[ -n "${LS_CUDA:-}" ] && args+=("-DLS_CUDA=${LS_CUDA}")
[ -n "${LS_BUILD_TESTS:-}" ] && args+=("-DLS_BUILD_TESTS=${LS_BUILD_TESTS}" "-DLS_BUILD_BENCH=${LS_BUILD_TESTS}")
cmake "${args[@]}" >/dev/null
cmake --build "$build" -j "${LS_JOBS:-$(nproc)}"
