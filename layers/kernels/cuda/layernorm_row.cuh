// The LayerNorm forward of one row held in registers, shared by the kernels that write it:
// layernorm_forward's register path (layernorm.cu) and the residual add fused with the next
// block's LayerNorm (residual_layernorm.cu). One warp per row; lane l owns the 16-byte packs of
// N = 16 / sizeof(T) columns starting at (l + 32 i) * N, i < P. Both kernels go through the same
// code, so they write the same bits for the same row.
#pragma once

#include <type_traits>

#include "layers/kernels/cuda/cuda_common.cuh"

namespace ls {
namespace cuda {

// One output element of the forward, y = (x - mean) * rstd * gamma + beta: every kernel that
// writes y (the forwards, the backward that recomputes it) goes through this expression, so they
// write the same bits for the same x, mean and rstd.
__device__ __forceinline__ float ln_output(float x, float mean, float rstd, float gamma,
                                           float beta) {
  return (x - mean) * rstd * gamma + beta;
}

// Mean, rstd and y of the row in xp (packs at or past cols zero-filled by the caller); gamma,
// beta and y_row 16-byte aligned, cols % N == 0. Two-pass statistics: the mean, then the
// centred sum of squares, each a lane sum in pack order and a warp_sum.
template <class T, int P>
__device__ __forceinline__ void layernorm_row_forward(const Pack16<T> (&xp)[P], int lane,
                                                      int64_t cols, float eps,
                                                      const T* __restrict__ gamma,
                                                      const T* __restrict__ beta, T* y_row,
                                                      float& mean_out, float& rstd_out) {
  constexpr int N = Pack16<T>::kElems;
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < P; ++i)
#pragma unroll
    for (int j = 0; j < N; ++j) s += to_f32(xp[i].v[j]);
  const float mean = warp_sum(s) / float(cols);
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < P; ++i) {
    if (int64_t(lane + 32 * i) * N >= cols) continue;  // zero-filled packs are not (0 - mean)
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const float d = to_f32(xp[i].v[j]) - mean;
      ss = fmaf(d, d, ss);
    }
  }
  const float rstd = rsqrtf(warp_sum(ss) / float(cols) + eps);
#pragma unroll
  for (int i = 0; i < P; ++i) {
    const int64_t c = int64_t(lane + 32 * i) * N;
    if (c >= cols) continue;
    const Pack16<T> g = *reinterpret_cast<const Pack16<T>*>(gamma + c);
    const Pack16<T> b = *reinterpret_cast<const Pack16<T>*>(beta + c);
    Pack16<T> out;
#pragma unroll
    for (int j = 0; j < N; ++j)
      out.v[j] =
          from_f32<T>(ln_output(to_f32(xp[i].v[j]), mean, rstd, to_f32(g.v[j]), to_f32(b.v[j])));
    *reinterpret_cast<Pack16<T>*>(y_row + c) = out;
  }
  mean_out = mean;
  rstd_out = rstd;
}

// Calls f(P) (an integral constant) with the fewest packs per lane, 1, 2, 4 or 8, that hold a
// row of cols columns (cols <= 32 * 8 * N); both kernels pick P this way.
template <class T, class F>
bool with_row_packs(int64_t cols, F&& f) {
  constexpr int64_t kPerPack = 32 * int64_t(Pack16<T>::kElems);  // columns per pack and warp
  if (cols <= kPerPack)
    f(std::integral_constant<int, 1>{});
  else if (cols <= 2 * kPerPack)
    f(std::integral_constant<int, 2>{});
  else if (cols <= 4 * kPerPack)
    f(std::integral_constant<int, 4>{});
  else if (cols <= 8 * kPerPack)
    f(std::integral_constant<int, 8>{});
  else
    return false;
  return true;
}

}  // namespace cuda
}  // namespace ls
