#!/usr/bin/env bash
# Quick check of the CUDA kernels on a GPU machine: configures a Release build for sm_90,
# builds only the CUDA kernel tests and the kernel benchmark, runs them, and copies the logs
# to $OUT (or ./out-cuda-kernels when $OUT is unset). doctest's header must be present under
# .deps/doctest/ (or installed). Each test case of test_cuda_kernels runs as its own process
# (unbuffered output, CUDA_LAUNCH_BLOCKING=1) so that one failure cannot hide another; a
# failing case is re-run under compute-sanitizer when it is available.
# Exit status: non-zero when a test failed.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-$PWD/out-cuda-kernels}"
BUILD="${BUILD_DIR:-build-cuda-quick}"
mkdir -p "$OUT_DIR"
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || true
env | grep -i "cuda" > "$OUT_DIR/env.txt" 2>&1 || true
status=0
{
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DLS_BUILD_TESTS=ON -DLS_BUILD_BENCH=ON &&
    cmake --build "$BUILD" -j16 --target cuda_test_cuda_gemm cuda_test_cuda_kernels bench_kernels
} > "$OUT_DIR/build.log" 2>&1 || { echo "build failed"; tail -50 "$OUT_DIR/build.log"; exit 1; }
echo "build ok"
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
i=0
for tc in "*cast*" "*embedding*" "*layernorm*" "*dropout fusions*" "*split/merge*" "*softmax*" \
  "*cross-entropy*" "*Adam*"; do
  i=$((i + 1))
  log="$OUT_DIR/kernels_$i.log"
  CUDA_LAUNCH_BLOCKING=1 timeout 120 stdbuf -o0 -e0 "$BUILD/tests/cuda_test_cuda_kernels" \
    -tc="$tc" > "$log" 2>&1
  rc=$?
  echo "test case $tc: exit $rc"
  if [ $rc -ne 0 ]; then
    status=1
    grep -B3 -A10 "ERROR\|FATAL\|crash\|error" "$log" | head -60
    tail -5 "$log"
    if [ -n "$SAN" ]; then
      timeout 100 "$SAN" --tool memcheck --print-limit 10 "$BUILD/tests/cuda_test_cuda_kernels" \
        -tc="$tc" > "$OUT_DIR/sanitizer_$i.log" 2>&1
      echo "  compute-sanitizer: exit $?"
      grep -m 20 -A6 "=========" "$OUT_DIR/sanitizer_$i.log" | head -40
    fi
  fi
done
timeout 150 stdbuf -o0 -e0 "$BUILD/tests/cuda_test_cuda_gemm" > "$OUT_DIR/gemm.log" 2>&1
rc=$?
echo "cuda_test_cuda_gemm: exit $rc"
tail -4 "$OUT_DIR/gemm.log"
[ $rc -ne 0 ] && { status=1; grep -B3 -A10 "ERROR" "$OUT_DIR/gemm.log" | head -40; }
LS_BENCH_TRACE=1 timeout 120 stdbuf -o0 -e0 "$BUILD/bench/bench_kernels" 20 > "$OUT_DIR/bench_kernels.log" 2>&1
rc=$?
echo "bench_kernels: exit $rc"
grep -v "bench step" "$OUT_DIR/bench_kernels.log"
[ $rc -ne 0 ] && tail -3 "$OUT_DIR/bench_kernels.log"
exit $status
