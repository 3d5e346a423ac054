// Optimizer kernels over the flat fp32 buffers.
//   sum_squares: out[0] += sum x^2; grid-stride partial sums (256 threads, 8 blocks per SM, four
//     4-element packed loads in flight per thread),
//     a block reduction, then one fp32 atomicAdd per block (order not deterministic), or in
//     deterministic mode one partial per block summed in block order (reduce.cu); inf/NaN
//     propagate.
//   adam_update: Adam / AdamW fused with the gradient unscale and clipping (step->mult), the
//     learning rate and bias corrections of this update (all read from the AdamStep that
//     update_control wrote on the device, so the host never reads anything back), and the
//     working-copy write (fp32/fp16/bf16); when step->skip != 0 (overflow, stopped, bad input)
//     every thread returns before writing anything. One pass: reads
//     params, grads, m, v; writes params, m, v and the working copy. 256 threads, grid-stride,
//     4 elements per step (packed when aligned).
// Shapes: all buffers [n].
#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kSumUnroll = 4;  // sum_squares: packed loads in flight per thread

__global__ void sum_squares_kernel(const float* __restrict__ x, int64_t n, float* out,
                                   float* partials) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  __shared__ float scratch[33];
  const bool aligned = pack_aligned<float>(x);
  const int64_t stride = 4 * int64_t(gridDim.x) * blockDim.x;
  int64_t i = 4 * (int64_t(blockIdx.x) * blockDim.x + threadIdx.x);
  float s = 0.f;
  if (aligned) {
    // kSumUnroll packed loads in flight per thread, then their squares in a fixed order.
    for (; i + (kSumUnroll - 1) * stride + 4 <= n; i += kSumUnroll * stride) {
      float v[kSumUnroll][4];
#pragma unroll
      for (int u = 0; u < kSumUnroll; ++u) load4(x, i + u * stride, n, true, v[u]);
#pragma unroll
      for (int u = 0; u < kSumUnroll; ++u)
#pragma unroll
        for (int j = 0; j < 4; ++j) s += v[u][j] * v[u][j];
    }
  }
  for (; i < n; i += stride) {
    float v[4];
    load4(x, i, n, aligned && i + 4 <= n, v);
#pragma unroll
    for (int j = 0; j < 4; ++j) s += v[j] * v[j];
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) {
    if (partials != nullptr)
      partials[blockIdx.x] = s;  // deterministic: summed in block order by reduce.cu
    else
      atomicAdd(out, s);
  }
}

struct AdamDev {
  float b1, b2, eps, wd;
  bool decoupled;
};

template <class W>
__global__ void adam_kernel(float* params, const float* __restrict__ grads, float* m, float* v,
                            W* work, int64_t n, AdamDev h, const AdamStep* step) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  if (step->skip != 0) return;
  const float mult = float(step->mult), lr = float(step->lr);
  const float bias1 = float(step->bias1), bias2 = float(step->bias2);
  bool aligned = pack_aligned<float>(params) && pack_aligned<float>(grads) &&
                 pack_aligned<float>(m) && pack_aligned<float>(v) &&
                 (work == nullptr || pack_aligned<W>(work));
  for (int64_t i = 4 * (int64_t(blockIdx.x) * blockDim.x + threadIdx.x); i < n;
       i += 4 * int64_t(gridDim.x) * blockDim.x) {
    bool vec = aligned && i + 4 <= n;
    float p[4], g[4], mi[4], vi[4];
    load4(params, i, n, vec, p);
    load4(grads, i, n, vec, g);
    load4(m, i, n, vec, mi);
    load4(v, i, n, vec, vi);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      float gj = g[j] * mult;
      if (h.decoupled) {
        p[j] -= lr * h.wd * p[j];
      } else {
        gj += h.wd * p[j];
      }
      mi[j] = h.b1 * mi[j] + (1.f - h.b1) * gj;
      vi[j] = h.b2 * vi[j] + (1.f - h.b2) * gj * gj;
      p[j] -= lr * (mi[j] / bias1) / (sqrtf(vi[j] / bias2) + h.eps);
    }
    store4(params, i, n, vec, p);
    store4(m, i, n, vec, mi);
    store4(v, i, n, vec, vi);
    if (work != nullptr) store4(work, i, n, vec, p);
  }
}

}  // namespace

void launch_sum_squares(const float* x, size_t n, float* out, cudaStream_t s,
                        const Reduction& red) {
  if (n == 0) return;
  // A full SM's worth of threads (2048 / 256 blocks) with kSumUnroll loads each in flight.
  const unsigned grid = grid_for((int64_t(n) + 3) / 4, kThreads, int64_t(device_sm_count()) * 8);
  float* partials = red.deterministic() ? red.rows(grid, 1, "sum_squares") : nullptr;
  launch_kernel("sum_squares", sum_squares_kernel, grid, kThreads, 0, s, x, int64_t(n), out,
                partials);
  if (partials != nullptr) launch_sum_partials(partials, grid, 1, out, s);
}

void launch_adam_update(float* params, const float* grads, float* m, float* v, void* work,
                        DType work_t, size_t n, const Ops::AdamArgs& h, const AdamStep* step_dev,
                        cudaStream_t s) {
  if (n == 0) return;
  AdamDev d{h.beta1, h.beta2, h.eps, h.weight_decay, h.decoupled};
  unsigned grid = grid_for((int64_t(n) + 3) / 4, kThreads, int64_t(device_sm_count()) * 16);
  dispatch_dtype(work_t, "adam_update", [&](auto wv) {
    using W = decltype(wv);
    launch_kernel("adam_update", adam_kernel<W>, grid, kThreads, 0, s, params, grads, m, v,
                  static_cast<W*>(work), int64_t(n), d, step_dev);
  });
}

}  // namespace cuda
}  // namespace ls
