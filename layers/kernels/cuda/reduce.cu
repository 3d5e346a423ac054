// Fixed-order sums of per-block partials: the second stage of every deterministic reduction
// (column sums of bias / LayerNorm gradients, cross-entropy sums, the gradient's sum of
// squares). out[c] += sum over g = 0..groups-1 of partials[g * cols + c], always in the same
// order, so the result does not depend on which block finished first.
// Thread layout: blocks of 8 x 64; threadIdx.x picks the column (8 per block: one 32-byte
// sector per group row), threadIdx.y walks the groups y, y+64, ... with 4 loads in flight; the
// 64 partial sums of a column are added in a fixed tree order through shared memory. Many
// small blocks (cols / 8) keep every SM busy for the usual [~100-1000 groups, 1024-4096 cols]
// shapes, where the old 32 x 8 blocks left most SMs idle and each thread summed a long chain.
// Shapes: partials [groups, cols] fp32; out [cols] fp32.
#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

constexpr int kCols = 8, kRows = 64;

__global__ void __launch_bounds__(kCols* kRows)
    sum_partials_kernel(const float* __restrict__ partials, int64_t groups, int64_t cols,
                        float* out) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  __shared__ float part[kRows][kCols + 1];
  const int64_t c = int64_t(blockIdx.x) * kCols + threadIdx.x;
  float s = 0.f;
  if (c < cols) {
    int64_t g = threadIdx.y;
    // Four independent loads per step, added in g order.
    for (; g + 3 * kRows < groups; g += 4 * kRows) {
      const float a = __ldg(partials + g * cols + c);
      const float b = __ldg(partials + (g + kRows) * cols + c);
      const float d = __ldg(partials + (g + 2 * kRows) * cols + c);
      const float e = __ldg(partials + (g + 3 * kRows) * cols + c);
      s += a;
      s += b;
      s += d;
      s += e;
    }
    for (; g < groups; g += kRows) s += __ldg(partials + g * cols + c);
  }
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  // Fixed tree over the 64 row sums of each column.
  for (int half = kRows / 2; half > 0; half /= 2) {
    if (threadIdx.y < half) part[threadIdx.y][threadIdx.x] += part[threadIdx.y + half][threadIdx.x];
    __syncthreads();
  }
  if (threadIdx.y == 0 && c < cols) out[c] += part[0][threadIdx.x];
}

}  // namespace

float* Reduction::rows(int64_t groups, int64_t cols, const char* call) const {
  const size_t need = size_t(groups) * size_t(cols);
  LS_REQUIRE(need <= capacity, LS_ERR_INTERNAL,
             call << ": deterministic reduction needs " << need * 4 << " bytes of scratch, the "
                  << "workspace has " << capacity * 4);
  return scratch;
}

PartialSums Reduction::sums(int arrays, int64_t groups, int64_t cols, float* out0, float* out1,
                            const char* call) const {
  LS_REQUIRE(deterministic() && sync != nullptr, LS_ERR_INTERNAL,
             call << ": fixed-order sums need the deterministic scratch and its counters");
  PartialSums p;
  p.rows = rows(int64_t(arrays) * groups, cols, call);
  p.sync = sync;
  p.out[0] = out0;
  p.out[1] = out1;
  p.arrays = arrays;
  p.groups = groups;
  p.cols = cols;
  return p;
}

void launch_sum_partials(const float* partials, int64_t groups, int64_t cols, float* out,
                         cudaStream_t s) {
  if (groups == 0 || cols == 0) return;
  launch_kernel("sum_partials", sum_partials_kernel, unsigned((cols + kCols - 1) / kCols),
                dim3(kCols, kRows), 0, s, partials, groups, cols, out);
}

}  // namespace cuda
}  // namespace ls
