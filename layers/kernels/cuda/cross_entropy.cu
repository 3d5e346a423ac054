// Label-smoothed cross-entropy (fairseq's label_smoothed_nll_loss), forward and backward,
// never materialising a fp32 [T, V] softmax.
// Forward: one block of 512 threads per row t; the logits are read once: each thread keeps an
//   online (max, sum of exp(z - max)) and the sum of its logits, merged over the block; thread
//   0 reads z[y]. lse = max + log(sum-exp) is saved for every row (padding rows too);
//   non-padding rows add {loss, nll, 1} to sums[3] with fp32 atomics (order not deterministic),
//   or, in deterministic mode, every row writes its three values to scratch and reduce.cu sums
//   them in row order.
//   nll = lse - z[y], smooth = V lse - sum_v z[v],
//   loss = (1 - eps - eps/(V-1)) nll + eps/(V-1) smooth.
// Backward: one block of 256 threads per row, 4 consecutive logits per thread per step (packed
//   when V % 4 == 0): d_logits = grad_scale * (exp(z - lse) - q), q[y] = 1 - eps,
//   q[v != y] = eps/(V-1); rows whose target is padding are written as zeros. Reads the logits
//   once and writes d_logits once (d_logits may alias the logits).
// Shapes: logits, d_logits [T, V] (dt); targets [T] int32; lse [T], sums [3], grad_scale [1]
// (fp32).
#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

constexpr int kForwardThreads = 512;
constexpr int kBackwardThreads = 256;

template <class T>
__global__ void cross_entropy_forward_kernel(const T* __restrict__ logits,
                                             const int32_t* __restrict__ targets, float* lse,
                                             float* sums, int64_t vocab, int32_t padding_idx,
                                             float eps, float* partials) {
  __shared__ float scratch[33];
  int64_t t = blockIdx.x;
  const T* z = logits + t * vocab;
  bool aligned = vocab % 4 == 0 && pack_aligned<T>(logits);
  float m = -INFINITY, s = 0.f, sum_z = 0.f;
  for (int64_t v0 = 4 * int64_t(threadIdx.x); v0 < vocab; v0 += 4 * int64_t(blockDim.x)) {
    float x[4];
    load4(z, v0, vocab, aligned && v0 + 4 <= vocab, x);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (v0 + j >= vocab) break;
      sum_z += x[j];
      if (x[j] > m) {
        s = s * expf(m - x[j]) + 1.f;
        m = x[j];
      } else {
        s += expf(x[j] - m);
      }
    }
  }
  float mx = block_max(m, scratch);
  float sum_exp = block_sum(m == -INFINITY ? 0.f : s * expf(m - mx), scratch);
  float total_z = block_sum(sum_z, scratch);
  if (threadIdx.x == 0) {
    float row_lse = mx + logf(sum_exp);
    lse[t] = row_lse;
    int32_t y = targets[t];
    float row[3] = {0.f, 0.f, 0.f};
    if (y != padding_idx) {
      float eps_other = eps / float(vocab - 1);
      float w_nll = 1.f - eps - eps_other;
      float nll = row_lse - to_f32(z[y]);
      float smooth = float(vocab) * row_lse - total_z;
      row[0] = w_nll * nll + eps_other * smooth;
      row[1] = nll;
      row[2] = 1.f;
    }
    if (partials != nullptr) {  // deterministic: per-row values, summed in order by reduce.cu
      for (int k = 0; k < 3; ++k) partials[3 * t + k] = row[k];
    } else if (y != padding_idx) {
      for (int k = 0; k < 3; ++k) atomicAdd(sums + k, row[k]);
    }
  }
}

template <class T>
__global__ void cross_entropy_backward_kernel(const T* logits, const int32_t* __restrict__ targets,
                                              const float* __restrict__ lse,
                                              const float* __restrict__ grad_scale, T* d_logits,
                                              int64_t vocab, int32_t padding_idx, float eps) {
  int64_t t = blockIdx.x;
  int32_t y = targets[t];
  bool pad = y == padding_idx;
  float scale = grad_scale[0], row_lse = lse[t];
  float eps_other = eps / float(vocab - 1), q_target = 1.f - eps;
  const T* z = logits + t * vocab;
  T* dz = d_logits + t * vocab;
  bool aligned = vocab % 4 == 0 && pack_aligned<T>(logits) && pack_aligned<T>(d_logits);
  for (int64_t v0 = 4 * int64_t(threadIdx.x); v0 < vocab; v0 += 4 * int64_t(blockDim.x)) {
    bool vec = aligned && v0 + 4 <= vocab;
    float x[4];
    if (pad) {
#pragma unroll
      for (int j = 0; j < 4; ++j) x[j] = 0.f;
    } else {
      load4(z, v0, vocab, vec, x);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float q = (v0 + j == y) ? q_target : eps_other;
        x[j] = scale * (expf(x[j] - row_lse) - q);
      }
    }
    store4(dz, v0, vocab, vec, x);
  }
}

}  // namespace

void launch_cross_entropy_forward(const void* logits, const int32_t* targets, float* lse,
                                  float* sums, int64_t rows, int64_t vocab, int32_t padding_idx,
                                  float eps, DType dt, cudaStream_t s, const Reduction& red) {
  if (rows == 0) return;
  float* partials = red.deterministic() ? red.rows(rows, 3, "cross_entropy_forward") : nullptr;
  dispatch_dtype(dt, "cross_entropy_forward", [&](auto tv) {
    using T = decltype(tv);
    cross_entropy_forward_kernel<T><<<unsigned(rows), kForwardThreads, 0, s>>>(
        static_cast<const T*>(logits), targets, lse, sums, vocab, padding_idx, eps, partials);
  });
  LS_LAUNCH_CHECK("cross_entropy_forward");
  if (partials != nullptr) launch_sum_partials(partials, rows, 3, sums, s);
}

void launch_cross_entropy_backward(const void* logits, const int32_t* targets, const float* lse,
                                   const float* grad_scale_dev, void* d_logits, int64_t rows,
                                   int64_t vocab, int32_t padding_idx, float eps, DType dt,
                                   cudaStream_t s) {
  if (rows == 0) return;
  dispatch_dtype(dt, "cross_entropy_backward", [&](auto tv) {
    using T = decltype(tv);
    cross_entropy_backward_kernel<T><<<unsigned(rows), kBackwardThreads, 0, s>>>(
        static_cast<const T*>(logits), targets, lse, grad_scale_dev, static_cast<T*>(d_logits),
        vocab, padding_idx, eps);
  });
  LS_LAUNCH_CHECK("cross_entropy_backward");
}

}  // namespace cuda
}  // namespace ls
