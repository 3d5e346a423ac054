#!/usr/bin/env bash
# Runs on the GPU machine (H100/H200, sm_90): builds Release for sm_90, runs the whole test
# suite (CUDA tests included), `ls-train info`, and the benchmarks named in $LS_BENCH (default:
# all bench_* executables), writing every log under $OUT (or ./out).
# Headers the machine lacks (doctest) travel in .deps/ (carry it: run with carry [".deps"]).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nvcc --version | tail -1
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
cmake -S . -B build-device -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
if ! cmake --build build-device -j "$(nproc)" > "$OUT/build.log" 2>&1; then
  grep -E "error|Error" "$OUT/build.log" | head -40; exit 1
fi
echo "== build ok"
./build-device/ls-train info | tee "$OUT/info.txt"
ctest --test-dir build-device --output-on-failure -j 4 ${LS_CTEST_ARGS:-} > "$OUT/ctest.log" 2>&1
rc=$?
grep -E "tests passed|tests failed|Failed|\*\*\*|Skipped|Not Run" "$OUT/ctest.log" | head -40
# compute-sanitizer over the CUDA tests (LS_SANITIZE=1): memcheck on every CUDA test,
# racecheck on the kernel tests (shared-memory reductions). Logs: $OUT/sanitize_*.log.
if [ "${LS_SANITIZE:-0}" = 1 ]; then
  CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for t in build-device/tests/cuda_test_*; do
    [ -x "$t" ] || continue
    n=$(basename "$t")
    timeout "${LS_SANITIZE_TIMEOUT:-240}" "$CS" --tool memcheck --leak-check full \
      --error-exitcode 9 "$t" > "$OUT/sanitize_memcheck_$n.log" 2>&1
    echo "memcheck $n: rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/sanitize_memcheck_$n.log" | tail -1)"
  done
  for n in cuda_test_cuda_kernels; do
    timeout "${LS_SANITIZE_TIMEOUT:-240}" "$CS" --tool racecheck --error-exitcode 9 \
      "build-device/tests/$n" > "$OUT/sanitize_racecheck_$n.log" 2>&1
    echo "racecheck $n: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitize_racecheck_$n.log" | tail -1)"
  done
fi
if [ "${LS_BENCH:-all}" != "none" ]; then
  for b in build-device/bench/bench_*; do
    [ -x "$b" ] || continue
    name=$(basename "$b")
    if [ "${LS_BENCH:-all}" = all ] || [[ " ${LS_BENCH} " == *" $name "* ]]; then
      echo "== $name"; timeout 300 "$b" 2>&1 | tee "$OUT/$name.txt" | tail -40
    fi
  done
fi
exit $rc
