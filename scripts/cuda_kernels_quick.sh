#!/usr/bin/env bash
# Quick check of the CUDA kernels on a GPU machine: configures a Release build for sm_90,
# builds only the CUDA kernel tests and the kernel benchmark, runs them, and copies the logs
# to $OUT (or ./out-cuda-kernels when $OUT is unset). doctest's header must be present under
# .deps/doctest/ (or installed). Exit status: non-zero when a test failed.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-$PWD/out-cuda-kernels}"
BUILD="${BUILD_DIR:-build-cuda-quick}"
mkdir -p "$OUT_DIR"
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || true
status=0
{
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DLS_BUILD_TESTS=ON -DLS_BUILD_BENCH=ON &&
    cmake --build "$BUILD" -j16 --target cuda_test_cuda_gemm cuda_test_cuda_kernels bench_kernels
} > "$OUT_DIR/build.log" 2>&1 || { echo "build failed"; tail -50 "$OUT_DIR/build.log"; exit 1; }
echo "build ok"
for t in cuda_test_cuda_kernels cuda_test_cuda_gemm; do
  timeout 180 "$BUILD/tests/$t" > "$OUT_DIR/$t.log" 2>&1
  rc=$?
  echo "$t: exit $rc"
  tail -8 "$OUT_DIR/$t.log"
  [ $rc -ne 0 ] && { status=1; grep -B4 -A12 "ERROR\|FATAL" "$OUT_DIR/$t.log" | head -150; }
done
timeout 120 "$BUILD/bench/bench_kernels" 20 > "$OUT_DIR/bench_kernels.log" 2>&1
echo "bench_kernels: exit $?"
cat "$OUT_DIR/bench_kernels.log"
exit $status
