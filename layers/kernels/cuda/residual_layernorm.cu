// The residual add of a pre-LN block fused with the next block's LayerNorm:
//   out = residual + dropout(x + bias)          (bias_dropout_residual_forward's bits)
//   y, mean, rstd = LayerNorm(out; gamma, beta) (layernorm_forward's bits)
// One kernel reads x and residual once and writes out and y, where the two ops in turn read out
// again (and pay a second launch). Each element goes through bias_dropout_residual_value with the
// dropout factors of its flat index (dropout_factors8_aligned, as the flat kernel draws them);
// the rounded out row is then normalised by layernorm_row_forward, the code of layernorm_forward's
// register path, with the same pack layout, so both ways give the same bits.
// Thread layout: one warp per row, blocks of 4 warps; lane l owns the packs of 8 columns
// (16 bytes of fp16/bf16) starting at (l + 32 i) * 8, i < P, P = 1, 2, 4, 8 (rows up to 2048
// columns), all of a lane's loads issued before any arithmetic.
// Shapes: x, residual, out, y [rows, cols]; bias, gamma, beta [cols]; mean, rstd [rows] (fp32).
// Other cases (fp32, cols % 8 != 0, unaligned pointers, longer rows) run the two kernels.
#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"
#include "layers/kernels/cuda/layernorm_row.cuh"

namespace ls {
namespace cuda {
namespace {

constexpr int kRowWarps = 4;

template <class T, int P, bool kDrop, bool kBias>
__global__ void __launch_bounds__(32 * kRowWarps)
    bias_dropout_residual_layernorm_kernel(const T* x, const T* __restrict__ bias,
                                           const T* residual, T* out, const T* __restrict__ gamma,
                                           const T* __restrict__ beta, T* __restrict__ y,
                                           float* __restrict__ mean_out,
                                           float* __restrict__ rstd_out, int64_t rows, int64_t cols,
                                           float eps, DropoutParams d) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  static_assert(sizeof(T) == 2, "8 columns per 16-byte pack");
  const int64_t row = int64_t(blockIdx.x) * kRowWarps + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const int64_t base = row * cols;
  Raw8<T> xa[P], ra[P], ba[P];
#pragma unroll
  for (int i = 0; i < P; ++i) {
    const int64_t c = int64_t(lane + 32 * i) * 8;
    if (c >= cols) continue;
    xa[i] = load_raw8(x + base, c, cols, true);
    ra[i] = load_raw8(residual + base, c, cols, true);
    if (kBias) ba[i] = load_raw8(bias, c, cols, true);
  }
  const uint64_t off = kDrop ? dropout_offset(d.key) : 0;
  Pack16<T> xp[P];  // the block output, rounded: the LayerNorm's input
#pragma unroll
  for (int i = 0; i < P; ++i) {
    const int64_t c = int64_t(lane + 32 * i) * 8;
    if (c >= cols) {
#pragma unroll
      for (int j = 0; j < 8; ++j) xp[i].v[j] = from_f32<T>(0.f);
      continue;
    }
    float a[8], r[8], b[8], f[8];
    if (kDrop) dropout_factors8_aligned(d, off, uint64_t(base + c), f);
    unpack8(xa[i], a);
    unpack8(ra[i], r);
    if (kBias) unpack8(ba[i], b);
#pragma unroll
    for (int j = 0; j < 8; ++j)
      xp[i].v[j] = from_f32<T>(bias_dropout_residual_value<kBias, kDrop>(a[j], kBias ? b[j] : 0.f,
                                                                         r[j], kDrop ? f[j] : 1.f));
    *reinterpret_cast<Pack16<T>*>(out + base + c) = xp[i];
  }
  float mean, rstd;
  layernorm_row_forward<T, P>(xp, lane, cols, eps, gamma, beta, y + base, mean, rstd);
  if (lane == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

}  // namespace

void launch_bias_dropout_residual_layernorm(const void* x, const void* bias, const void* residual,
                                            void* out, const void* gamma, const void* beta, void* y,
                                            float* mean, float* rstd, int64_t rows, int64_t cols,
                                            float p, DropoutKey key, float eps, DType dt,
                                            cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  const bool aligned = cols % 8 == 0 && aligned16(x) && aligned16(residual) && aligned16(out) &&
                       aligned16(gamma) && aligned16(beta) && aligned16(y) &&
                       (bias == nullptr || aligned16(bias));
  const DropoutParams d = make_dropout(p, key);
  const unsigned grid = unsigned((rows + kRowWarps - 1) / kRowWarps);
  bool fused = false;
  dispatch_dtype(dt, "bias_dropout_residual_layernorm_forward", [&](auto tv) {
    using T = decltype(tv);
    if constexpr (sizeof(T) == 2) {
      if (!aligned) return;
      // P as layernorm_forward's register path picks it (with_row_packs; rows up to 2048).
      fused = with_row_packs<T>(cols, [&](auto packs) {
        auto run = [&](auto drop_c, auto bias_c) {
          launch_kernel(
              "bias_dropout_residual_layernorm_forward",
              bias_dropout_residual_layernorm_kernel<
                  T, decltype(packs)::value, decltype(drop_c)::value, decltype(bias_c)::value>,
              grid, 32 * kRowWarps, 0, s, static_cast<const T*>(x), static_cast<const T*>(bias),
              static_cast<const T*>(residual), static_cast<T*>(out), static_cast<const T*>(gamma),
              static_cast<const T*>(beta), static_cast<T*>(y), mean, rstd, rows, cols, eps, d);
        };
        dispatch_flags(d.active, bias != nullptr, run);
      });
    }
  });
  if (!fused) {
    launch_bias_dropout_residual(x, bias, residual, out, rows, cols, p, key, dt, s);
    launch_layernorm_forward(out, gamma, beta, y, mean, rstd, rows, cols, eps, dt, s);
  }
}

}  // namespace cuda
}  // namespace ls
