// Fixed-order sums of per-block partials: the second stage of every deterministic reduction
// (column sums of bias / LayerNorm gradients, cross-entropy sums, the gradient's sum of
// squares). out[c] += sum over g = 0..groups-1 of partials[g * cols + c], always in the same
// order, so the result does not depend on which block finished first.
// Thread layout: blocks of 32 x 8; threadIdx.x picks the column (32 per block), threadIdx.y
// walks the groups y, y+8, ...; the 8 partial sums are added in y order through shared memory.
// Shapes: partials [groups, cols] fp32; out [cols] fp32.
#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

__global__ void sum_partials_kernel(const float* __restrict__ partials, int64_t groups,
                                    int64_t cols, float* out) {
  __shared__ float part[8][33];
  const int64_t c = int64_t(blockIdx.x) * 32 + threadIdx.x;
  float s = 0.f;
  if (c < cols)
    for (int64_t g = threadIdx.y; g < groups; g += 8) s += partials[g * cols + c];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float t = 0.f;
#pragma unroll
    for (int y = 0; y < 8; ++y) t += part[y][threadIdx.x];
    out[c] += t;
  }
}

}  // namespace

float* Reduction::rows(int64_t groups, int64_t cols, const char* call) const {
  const size_t need = size_t(groups) * size_t(cols);
  LS_REQUIRE(need <= capacity, LS_ERR_INTERNAL,
             call << ": deterministic reduction needs " << need * 4 << " bytes of scratch, the "
                  << "workspace has " << capacity * 4);
  return scratch;
}

void launch_sum_partials(const float* partials, int64_t groups, int64_t cols, float* out,
                         cudaStream_t s) {
  if (groups == 0 || cols == 0) return;
  sum_partials_kernel<<<unsigned((cols + 31) / 32), dim3(32, 8), 0, s>>>(partials, groups, cols,
                                                                         out);
  LS_LAUNCH_CHECK("sum_partials");
}

}  // namespace cuda
}  // namespace ls
