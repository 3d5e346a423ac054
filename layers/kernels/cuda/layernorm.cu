// LayerNorm over the last dimension, forward and backward, statistics in fp32.
// Forward: one warp per row (blocks of 4 warps), y = (x - mean) * rstd * gamma + beta, mean and
//   rstd [rows] saved. Two-pass statistics (mean, then the centred sum of squares) over the row,
//   whose re-reads hit L1/L2; 16-byte packed loads when cols and the pointers allow.
// Backward: one warp per row (blocks of 8 warps walking rows with a grid stride):
//   g = dy * gamma, xhat = (x - mean) * rstd,
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) (+ d_residual),
//   and the column sums d_gamma += sum dy * xhat, d_beta += sum dy are accumulated in the same
//   pass into per-block fp32 partials in shared memory (shared atomics), then added into the
//   fp32 outputs with one atomicAdd per column per block (summation order not deterministic).
//   Rows too long for the shared partials (2 * cols * 4 bytes > 96 KiB) use a separate
//   column-sum kernel (32 x 8 thread tiles) instead.
// Shapes: x, y, dy, dx, d_residual [rows, cols] (dt); gamma, beta [cols] (dt);
//   mean, rstd [rows], d_gamma, d_beta [cols] (fp32).
#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

template <class T, int N>
struct alignas(N * sizeof(T)) PackN {
  T v[N];
};

// Loads N elements [c, c+N) of a row as fp32 (VEC: one packed access; else bounds-checked).
template <int N, bool VEC, class T>
__device__ __forceinline__ void load_n(const T* row, int64_t c, int64_t cols, float out[N]) {
  if (VEC) {
    PackN<T, N> p = *reinterpret_cast<const PackN<T, N>*>(row + c);
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = to_f32(p.v[j]);
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = c + j < cols ? to_f32(row[c + j]) : 0.f;
  }
}
template <int N, bool VEC, class T>
__device__ __forceinline__ void store_n(T* row, int64_t c, int64_t cols, const float in[N]) {
  if (VEC) {
    PackN<T, N> p;
#pragma unroll
    for (int j = 0; j < N; ++j) p.v[j] = from_f32<T>(in[j]);
    *reinterpret_cast<PackN<T, N>*>(row + c) = p;
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j)
      if (c + j < cols) row[c + j] = from_f32<T>(in[j]);
  }
}

// N elements per lane per step: 16 bytes when VEC, 1 otherwise.
template <class T, bool VEC>
constexpr int lane_elems() {
  return VEC ? int(16 / sizeof(T)) : 1;
}

template <class T, bool VEC>
__global__ void layernorm_forward_kernel(const T* __restrict__ x, const T* __restrict__ gamma,
                                         const T* __restrict__ beta, T* __restrict__ y,
                                         float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                         int64_t rows, int64_t cols, float eps) {
  constexpr int N = lane_elems<T, VEC>();
  int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* xr = x + row * cols;
  T* yr = y + row * cols;
  float s = 0.f;
  for (int64_t c = int64_t(lane) * N; c < cols; c += 32 * N) {
    float v[N];
    load_n<N, VEC>(xr, c, cols, v);
#pragma unroll
    for (int j = 0; j < N; ++j) s += v[j];
  }
  float mean = warp_sum(s) / float(cols);
  float ss = 0.f;
  for (int64_t c = int64_t(lane) * N; c < cols; c += 32 * N) {
    float v[N];
    load_n<N, VEC>(xr, c, cols, v);
#pragma unroll
    for (int j = 0; j < N; ++j)
      if (VEC || c + j < cols) ss += (v[j] - mean) * (v[j] - mean);
  }
  float rstd = rsqrtf(warp_sum(ss) / float(cols) + eps);
  for (int64_t c = int64_t(lane) * N; c < cols; c += 32 * N) {
    float v[N], g[N], b[N];
    load_n<N, VEC>(xr, c, cols, v);
    load_n<N, VEC>(gamma, c, cols, g);
    load_n<N, VEC>(beta, c, cols, b);
#pragma unroll
    for (int j = 0; j < N; ++j) v[j] = (v[j] - mean) * rstd * g[j] + b[j];
    store_n<N, VEC>(yr, c, cols, v);
  }
  if (lane == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// SHARED: accumulate d_gamma/d_beta through shared-memory partials (2 * cols floats).
template <class T, bool VEC, bool SHARED>
__global__ void layernorm_backward_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                          const T* __restrict__ gamma,
                                          const float* __restrict__ mean,
                                          const float* __restrict__ rstd, const T* d_residual,
                                          T* dx, float* d_gamma, float* d_beta, int64_t rows,
                                          int64_t cols) {
  constexpr int N = lane_elems<T, VEC>();
  extern __shared__ float shared_partials[];
  float* sg = shared_partials;
  float* sb = shared_partials + cols;
  if (SHARED) {
    for (int64_t c = threadIdx.x; c < 2 * cols; c += blockDim.x) shared_partials[c] = 0.f;
    __syncthreads();
  }
  int lane = threadIdx.x & 31;
  int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; row < rows;
       row += warps) {
    const T* dyr = dy + row * cols;
    const T* xr = x + row * cols;
    float mu = mean[row], rs = rstd[row];
    float sum_g = 0.f, sum_gx = 0.f;
    for (int64_t c = int64_t(lane) * N; c < cols; c += 32 * N) {
      float d[N], v[N], g[N];
      load_n<N, VEC>(dyr, c, cols, d);
      load_n<N, VEC>(xr, c, cols, v);
      load_n<N, VEC>(gamma, c, cols, g);
#pragma unroll
      for (int j = 0; j < N; ++j) {
        float gj = d[j] * g[j];
        sum_g += gj;
        sum_gx += gj * (v[j] - mu) * rs;
      }
    }
    float inv_cols = 1.f / float(cols);
    float mean_g = warp_sum(sum_g) * inv_cols;
    float mean_gx = warp_sum(sum_gx) * inv_cols;
    for (int64_t c = int64_t(lane) * N; c < cols; c += 32 * N) {
      float d[N], v[N], g[N], out[N];
      load_n<N, VEC>(dyr, c, cols, d);
      load_n<N, VEC>(xr, c, cols, v);
      load_n<N, VEC>(gamma, c, cols, g);
      if (d_residual != nullptr) {
        load_n<N, VEC>(d_residual + row * cols, c, cols, out);
      } else {
#pragma unroll
        for (int j = 0; j < N; ++j) out[j] = 0.f;
      }
#pragma unroll
      for (int j = 0; j < N; ++j) {
        float xhat = (v[j] - mu) * rs;
        out[j] += rs * (d[j] * g[j] - mean_g - xhat * mean_gx);
        if (SHARED && (VEC || c + j < cols)) {
          atomicAdd(sg + c + j, d[j] * xhat);
          atomicAdd(sb + c + j, d[j]);
        }
      }
      store_n<N, VEC>(dx + row * cols, c, cols, out);
    }
  }
  if (SHARED) {
    __syncthreads();
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      atomicAdd(d_gamma + c, sg[c]);
      atomicAdd(d_beta + c, sb[c]);
    }
  }
}

// Column sums for long rows: d_gamma[c] += sum_r dy * xhat, d_beta[c] += sum_r dy.
// Blocks of 32 x 8: x walks 32 columns, y walks rows with stride 8 * gridDim.y.
template <class T>
__global__ void layernorm_param_grad_kernel(const T* dy, const T* x, const float* mean,
                                            const float* rstd, float* d_gamma, float* d_beta,
                                            int64_t rows, int64_t cols) {
  __shared__ float pg[8][33], pb[8][33];
  int64_t c = int64_t(blockIdx.x) * 32 + threadIdx.x;
  float ag = 0.f, ab = 0.f;
  if (c < cols) {
    for (int64_t r = int64_t(blockIdx.y) * 8 + threadIdx.y; r < rows; r += int64_t(gridDim.y) * 8) {
      float d = to_f32(dy[r * cols + c]);
      ag += d * (to_f32(x[r * cols + c]) - mean[r]) * rstd[r];
      ab += d;
    }
  }
  pg[threadIdx.y][threadIdx.x] = ag;
  pb[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float sgv = 0.f, sbv = 0.f;
#pragma unroll
    for (int y = 0; y < 8; ++y) {
      sgv += pg[y][threadIdx.x];
      sbv += pb[y][threadIdx.x];
    }
    atomicAdd(d_gamma + c, sgv);
    atomicAdd(d_beta + c, sbv);
  }
}

template <class T>
bool can_vectorise(int64_t cols, std::initializer_list<const void*> ptrs) {
  constexpr int N = 16 / sizeof(T);
  if (cols % N != 0) return false;
  for (const void* p : ptrs)
    if (p != nullptr && reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

constexpr size_t kMaxSharedPartialBytes = 96 * 1024;

}  // namespace

void launch_layernorm_forward(const void* x, const void* gamma, const void* beta, void* y,
                              float* mean, float* rstd, int64_t rows, int64_t cols, float eps,
                              DType dt, cudaStream_t s) {
  if (rows == 0) return;
  constexpr int kWarps = 4;
  unsigned grid = unsigned((rows + kWarps - 1) / kWarps);
  dispatch_dtype(dt, "layernorm_forward", [&](auto tv) {
    using T = decltype(tv);
    if (can_vectorise<T>(cols, {x, gamma, beta, y}))
      layernorm_forward_kernel<T, true><<<grid, 32 * kWarps, 0, s>>>(
          static_cast<const T*>(x), static_cast<const T*>(gamma), static_cast<const T*>(beta),
          static_cast<T*>(y), mean, rstd, rows, cols, eps);
    else
      layernorm_forward_kernel<T, false><<<grid, 32 * kWarps, 0, s>>>(
          static_cast<const T*>(x), static_cast<const T*>(gamma), static_cast<const T*>(beta),
          static_cast<T*>(y), mean, rstd, rows, cols, eps);
  });
  LS_LAUNCH_CHECK("layernorm_forward");
}

void launch_layernorm_backward(const void* dy, const void* x, const void* gamma, const float* mean,
                               const float* rstd, const void* d_residual, void* dx, float* d_gamma,
                               float* d_beta, int64_t rows, int64_t cols, DType dt,
                               cudaStream_t s) {
  if (rows == 0) return;
  constexpr int kWarps = 8;
  size_t shared_bytes = size_t(2 * cols) * sizeof(float);
  bool shared = shared_bytes <= kMaxSharedPartialBytes;
  int64_t blocks = (rows + kWarps - 1) / kWarps;
  int64_t cap = int64_t(device_sm_count()) * 8;  // up to 64 warps per SM
  if (blocks > cap) blocks = cap;
  dispatch_dtype(dt, "layernorm_backward", [&](auto tv) {
    using T = decltype(tv);
    bool vec = can_vectorise<T>(cols, {dy, x, gamma, d_residual, dx});
    auto launch = [&](auto kernel) {
      size_t bytes = shared ? shared_bytes : 0;
      if (bytes > 48 * 1024)
        LS_CUDA_CALL(
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
      kernel<<<unsigned(blocks), 32 * kWarps, bytes, s>>>(
          static_cast<const T*>(dy), static_cast<const T*>(x), static_cast<const T*>(gamma), mean,
          rstd, static_cast<const T*>(d_residual), static_cast<T*>(dx), d_gamma, d_beta, rows,
          cols);
    };
    if (vec && shared)
      launch(layernorm_backward_kernel<T, true, true>);
    else if (vec)
      launch(layernorm_backward_kernel<T, true, false>);
    else if (shared)
      launch(layernorm_backward_kernel<T, false, true>);
    else
      launch(layernorm_backward_kernel<T, false, false>);
    LS_LAUNCH_CHECK("layernorm_backward");
    if (!shared) {
      dim3 block(32, 8);
      unsigned gx = unsigned((cols + 31) / 32);
      int64_t gy = int64_t(device_sm_count()) * 8 / gx;
      if (gy < 1) gy = 1;
      if (gy > (rows + 7) / 8) gy = (rows + 7) / 8;
      if (gy > 65535) gy = 65535;
      layernorm_param_grad_kernel<T><<<dim3(gx, unsigned(gy)), block, 0, s>>>(
          static_cast<const T*>(dy), static_cast<const T*>(x), mean, rstd, d_gamma, d_beta, rows,
          cols);
      LS_LAUNCH_CHECK("layernorm_backward (parameter gradients)");
    }
  });
}

}  // namespace cuda
}  // namespace ls
