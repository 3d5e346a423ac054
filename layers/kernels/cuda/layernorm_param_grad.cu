// LayerNorm's parameter gradients in deterministic mode, as fixed-order column sums:
//   d_gamma[c] += sum over rows of dy[r, c] * (x[r, c] - mean[r]) * rstd[r],
//   d_beta[c]  += sum over rows of dy[r, c];
// or, from the output (FROM_OUTPUT, layernorm_backward_from_output), with
// xhat = (y[r, c] - beta[c]) / gamma[c] in d_gamma's sum (mean and rstd are not read).
// Used only for rows the fused backward's register path (layernorm.cu) does not take (longer
// rows; from the output also where a block cannot have its shared memory), whose
// fallback adds column sums with float atomics: in deterministic mode those go to a discarded
// slice of the workspace and this kernel computes the real d_gamma / d_beta with one more read
// of dy and x (statistics from the forward's saved mean / rstd), or of dy and y.
// Thread layout: blocks of 32 x 8; a block owns 128 columns (4 consecutive per thread, packed
// when aligned) and a fixed slice of rows (threadIdx.y strides by 8 within it); the 8 row
// partials are added in order in shared memory and each block writes one partial row per
// output to the workspace, which reduce.cu sums in block order.
// Shapes: dy, x, y [rows, cols] (dt); gamma, beta [cols] (dt); mean, rstd [rows],
//   d_gamma, d_beta [cols] (fp32).
#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

// FROM_OUTPUT: x is the forward's output y; gamma and beta are read instead of mean and rstd.
template <class T, bool FROM_OUTPUT>
__global__ void layernorm_param_grad_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                            const T* __restrict__ gamma,
                                            const float* __restrict__ mean,
                                            const T* __restrict__ beta,
                                            const float* __restrict__ rstd, int64_t rows,
                                            int64_t cols, float* partials) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  __shared__ float part_g[8][129], part_b[8][129];
  const int64_t c = int64_t(blockIdx.x) * 128 + 4 * threadIdx.x;
  const bool aligned = cols % 4 == 0 && pack_aligned<T>(dy) && pack_aligned<T>(x);
  float ag[4] = {0.f, 0.f, 0.f, 0.f}, ab[4] = {0.f, 0.f, 0.f, 0.f};
  const int64_t per_block = (rows + gridDim.y - 1) / gridDim.y;
  const int64_t r0 = int64_t(blockIdx.y) * per_block;
  const int64_t r1 = r0 + per_block < rows ? r0 + per_block : rows;
  if (c < cols) {
    // From the output: xhat = (y - bc) / gc; columns past the row read as 0 and are not stored.
    float gc[4], bc[4];
    if (FROM_OUTPUT) {
      load4(gamma, c, cols, false, gc);
      load4(beta, c, cols, false, bc);
    }
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      const bool vec = aligned && c + 4 <= cols;
      float g[4], v[4];
      load4(dy + r * cols, c, cols, vec, g);
      load4(x + r * cols, c, cols, vec, v);
      if (FROM_OUTPUT) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          ag[j] += g[j] * ((v[j] - bc[j]) / gc[j]);
          ab[j] += g[j];
        }
      } else {
        const float m = mean[r], s = rstd[r];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          ag[j] += g[j] * (v[j] - m) * s;
          ab[j] += g[j];
        }
      }
    }
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    part_g[threadIdx.y][4 * threadIdx.x + j] = ag[j];
    part_b[threadIdx.y][4 * threadIdx.x + j] = ab[j];
  }
  __syncthreads();
  if (threadIdx.y == 0) {
    for (int j = 0; j < 4; ++j) {
      if (c + j >= cols) break;
      float sg = 0.f, sb = 0.f;
#pragma unroll
      for (int y = 0; y < 8; ++y) {
        sg += part_g[y][4 * threadIdx.x + j];
        sb += part_b[y][4 * threadIdx.x + j];
      }
      partials[int64_t(blockIdx.y) * cols + c + j] = sg;
      partials[(int64_t(gridDim.y) + blockIdx.y) * cols + c + j] = sb;
    }
  }
}

}  // namespace

int64_t layernorm_param_grad_groups(int64_t rows, int64_t cols) {
  const int64_t gx = (cols + 127) / 128;
  int64_t gy = int64_t(device_sm_count()) * 8 / gx;
  if (gy < 1) gy = 1;
  if (gy > (rows + 7) / 8) gy = (rows + 7) / 8;
  return gy;
}

void launch_layernorm_param_grad(const void* dy, const LnXhatSource& src, const void* gamma,
                                 const float* rstd, float* d_gamma, float* d_beta, int64_t rows,
                                 int64_t cols, DType dt, float* partials, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  const unsigned gx = unsigned((cols + 127) / 128);
  const int64_t gy = layernorm_param_grad_groups(rows, cols);
  dispatch_dtype(dt, "layernorm_backward (parameter gradients)", [&](auto tv) {
    using T = decltype(tv);
    auto launch = [&](auto kernel) {
      launch_kernel("layernorm_backward (parameter gradients)", kernel, dim3(gx, unsigned(gy)),
                    dim3(32, 8), 0, s, static_cast<const T*>(dy), static_cast<const T*>(src.xy),
                    static_cast<const T*>(gamma), src.mean, static_cast<const T*>(src.beta), rstd,
                    rows, cols, partials);
    };
    if (src.from_output)
      launch(layernorm_param_grad_kernel<T, true>);
    else
      launch(layernorm_param_grad_kernel<T, false>);
  });
  launch_sum_partials(partials, gy, cols, d_gamma, s);
  launch_sum_partials(partials + gy * cols, gy, cols, d_beta, s);
}

}  // namespace cuda
}  // namespace ls
