// Elementwise fusions around dropout, and the column/row sums they need:
//   bias_dropout_residual: out = residual + dropout(x + bias)   (flat, out may alias residual)
//   act_dropout_forward:   out = dropout(act(pre))                (flat, out may alias pre)
//   dropout_forward:       out = dropout(x)                       (flat, out may alias x)
//   act_dropout_backward:  d_pre = act'(pre) * dropout_bwd(d_out), d_bias += column sums
//   dropout_bias_backward: the same without act'; bias_grad: column sums only
//   relu_dropout_backward_from_output: d_pre = d_out * (out > 0 ? 1/(1-p) : 0) from the ReLU
//                          forward's output (no Philox), d_bias += column sums
//   row_sums (BGradA fallback), activation (GEMM BiasAct fallback).
// Dropout masks are never stored: every kernel regenerates them with Philox from the key and
// the element's flat index in the [rows, cols] tensor (philox.h), four elements per call.
// Layouts: flat kernels use a grid-stride loop, 256 threads, 4 consecutive elements per thread
// (packed access when aligned). Column-sum kernels use blocks of 32 x 8 threads covering a tile
// of 128 columns: thread x owns 4 columns, thread y walks rows with stride 8 * gridDim.y; the 8
// row-partials are reduced in shared memory and added to the fp32 gradient with one atomicAdd
// per column per block (so d_bias's summation order varies across runs), or, in deterministic
// mode, written to scratch rows [gridDim.y, cols] that reduce.cu sums in a fixed order.
// The elementwise kernels read each element before writing it from the same thread, so every
// output may alias an input of the same shape (the FFN runs act_dropout_forward in place).
#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

constexpr int kThreads = 256;
// backward_colsum_kernel's `act` beyond Activation's values: -1 no activation (dropout only);
// kReluFromOutput: `pre` is the output of dropout(relu(.)) and the mask is read from its sign.
constexpr int kNoAct = -1;
constexpr int kReluFromOutput = -2;

inline unsigned flat_grid(int64_t n) {
  return grid_for((n + 3) / 4, kThreads, int64_t(device_sm_count()) * 16);
}

template <class T>
__global__ void bias_dropout_residual_kernel(const T* x, const T* bias, const T* residual, T* out,
                                             int64_t rows, int64_t cols, DropoutParams d) {
  int64_t n = rows * cols;
  bool aligned = pack_aligned<T>(x) && pack_aligned<T>(residual) && pack_aligned<T>(out) &&
                 (bias == nullptr || pack_aligned<T>(bias)) && cols % 4 == 0;
  for (int64_t i = 4 * (int64_t(blockIdx.x) * blockDim.x + threadIdx.x); i < n;
       i += 4 * int64_t(gridDim.x) * blockDim.x) {
    bool vec = aligned && i + 4 <= n;
    float a[4], r[4], b[4] = {0.f, 0.f, 0.f, 0.f}, f[4];
    load4(x, i, n, vec, a);
    load4(residual, i, n, vec, r);
    int64_t col = i % cols;
    if (bias != nullptr) {
      if (vec) {
        load4(bias, col, cols, true, b);
      } else {
        int64_t c = col;
        for (int j = 0; j < 4; ++j) {
          b[j] = to_f32(bias[c]);
          if (++c == cols) c = 0;
        }
      }
    }
    dropout_factors4(d, uint64_t(i), f);
#pragma unroll
    for (int j = 0; j < 4; ++j) a[j] = r[j] + (a[j] + b[j]) * f[j];
    store4(out, i, n, vec, a);
  }
}

template <class T>
__global__ void act_dropout_forward_kernel(const T* pre, T* out, int64_t n, int act,
                                           DropoutParams d) {
  bool aligned = pack_aligned<T>(pre) && pack_aligned<T>(out);
  for (int64_t i = 4 * (int64_t(blockIdx.x) * blockDim.x + threadIdx.x); i < n;
       i += 4 * int64_t(gridDim.x) * blockDim.x) {
    bool vec = aligned && i + 4 <= n;
    float a[4], f[4];
    load4(pre, i, n, vec, a);
    dropout_factors4(d, uint64_t(i), f);
#pragma unroll
    for (int j = 0; j < 4; ++j) a[j] = act < 0 ? a[j] * f[j] : activate(act, a[j]) * f[j];
    store4(out, i, n, vec, a);
  }
}

// d_pre = [act'(pre)] * dropout_bwd(d_out) over [rows, cols] (leading dimension ld), plus
// d_bias += column sums of d_pre. act == kNoAct: no activation; act == kReluFromOutput:
// d_pre = d_out * (pre > 0 ? d.scale : 0) with pre the ReLU forward's output (no Philox);
// d_pre null: sums only.
template <class T>
__global__ void backward_colsum_kernel(const T* d_out, const T* pre, T* d_pre, float* d_bias,
                                       int64_t rows, int64_t cols, int64_t ld, int act,
                                       DropoutParams d, float* partials) {
  __shared__ float partial[8][129];
  int64_t c = int64_t(blockIdx.x) * 128 + 4 * threadIdx.x;
  bool aligned = cols % 4 == 0 && ld % 4 == 0 && pack_aligned<T>(d_out) &&
                 (pre == nullptr || pack_aligned<T>(pre)) &&
                 (d_pre == nullptr || pack_aligned<T>(d_pre));
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  if (c < cols) {
    bool vec = aligned && c + 4 <= cols;
    for (int64_t r = int64_t(blockIdx.y) * 8 + threadIdx.y; r < rows; r += int64_t(gridDim.y) * 8) {
      float g[4];
      load4(d_out + r * ld, c, cols, vec, g);
      if (act == kReluFromOutput) {
        float y[4];
        load4(pre + r * ld, c, cols, vec, y);
#pragma unroll
        for (int j = 0; j < 4; ++j) g[j] *= y[j] > 0.f ? d.scale : 0.f;
      } else {
        float f[4];
        dropout_factors4(d, uint64_t(r * cols + c), f);
        if (act >= 0) {
          float x[4];
          load4(pre + r * ld, c, cols, vec, x);
#pragma unroll
          for (int j = 0; j < 4; ++j) g[j] = g[j] * f[j] * activate_grad(act, x[j]);
        } else {
#pragma unroll
          for (int j = 0; j < 4; ++j) g[j] *= f[j];
        }
      }
      if (d_pre != nullptr) store4(d_pre + r * ld, c, cols, vec, g);
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[j] += g[j];
    }
  }
  if (d_bias == nullptr) return;
#pragma unroll
  for (int j = 0; j < 4; ++j) partial[threadIdx.y][4 * threadIdx.x + j] = acc[j];
  __syncthreads();
  if (threadIdx.y == 0) {
    for (int j = 0; j < 4; ++j) {
      float s = 0.f;
#pragma unroll
      for (int y = 0; y < 8; ++y) s += partial[y][4 * threadIdx.x + j];
      if (c + j >= cols) continue;
      if (partials != nullptr)
        partials[int64_t(blockIdx.y) * cols + c + j] = s;  // deterministic: summed by reduce.cu
      else
        atomicAdd(d_bias + c + j, s);
    }
  }
}

template <class T>
__global__ void row_sums_kernel(const T* a, float* out, int64_t rows, int64_t cols, int64_t ld) {
  int64_t warps_per_grid = int64_t(gridDim.x) * (blockDim.x / 32);
  int lane = threadIdx.x & 31;
  for (int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; r < rows;
       r += warps_per_grid) {
    float s = 0.f;
    for (int64_t c = lane; c < cols; c += 32) s += to_f32(a[r * ld + c]);
    s = warp_sum(s);
    if (lane == 0) out[r] += s;
  }
}

template <class T>
__global__ void activation_kernel(const T* in, T* out, int64_t rows, int64_t cols, int64_t ld,
                                  int act) {
  int64_t n = rows * cols;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off = (i / cols) * ld + i % cols;
    out[off] = from_f32<T>(activate(act, to_f32(in[off])));
  }
}

void launch_backward_colsum(const void* d_out, const void* pre, void* d_pre, float* d_bias,
                            int64_t rows, int64_t cols, int64_t ld, int act, float p,
                            DropoutKey key, DType dt, cudaStream_t s, const char* name,
                            const Reduction& red) {
  if (rows == 0 || cols == 0) return;
  DropoutParams d = make_dropout(p, key);
  dim3 block(32, 8);
  unsigned gx = unsigned((cols + 127) / 128);
  int64_t want = int64_t(device_sm_count()) * 8 / gx;  // about 8 blocks of 256 per SM
  if (want < 1) want = 1;
  int64_t gy = (rows + 7) / 8;
  if (gy > want) gy = want;
  if (gy > 65535) gy = 65535;
  dim3 grid(gx, unsigned(gy));
  float* partials = d_bias != nullptr && red.deterministic() ? red.rows(gy, cols, name) : nullptr;
  dispatch_dtype(dt, name, [&](auto tv) {
    using T = decltype(tv);
    backward_colsum_kernel<T>
        <<<grid, block, 0, s>>>(static_cast<const T*>(d_out), static_cast<const T*>(pre),
                                static_cast<T*>(d_pre), d_bias, rows, cols, ld, act, d, partials);
  });
  LS_LAUNCH_CHECK(name);
  if (partials != nullptr) launch_sum_partials(partials, gy, cols, d_bias, s);
}

}  // namespace

void launch_bias_dropout_residual(const void* x, const void* bias, const void* residual, void* out,
                                  int64_t rows, int64_t cols, float p, DropoutKey key, DType dt,
                                  cudaStream_t s) {
  if (rows * cols == 0) return;
  DropoutParams d = make_dropout(p, key);
  dispatch_dtype(dt, "bias_dropout_residual_forward", [&](auto tv) {
    using T = decltype(tv);
    bias_dropout_residual_kernel<T><<<flat_grid(rows * cols), kThreads, 0, s>>>(
        static_cast<const T*>(x), static_cast<const T*>(bias), static_cast<const T*>(residual),
        static_cast<T*>(out), rows, cols, d);
  });
  LS_LAUNCH_CHECK("bias_dropout_residual_forward");
}

void launch_act_dropout_forward(const void* pre, void* out, int64_t rows, int64_t cols,
                                Activation act, float p, DropoutKey key, DType dt, cudaStream_t s) {
  int64_t n = rows * cols;
  if (n == 0) return;
  DropoutParams d = make_dropout(p, key);
  dispatch_dtype(dt, "act_dropout_forward", [&](auto tv) {
    using T = decltype(tv);
    act_dropout_forward_kernel<T><<<flat_grid(n), kThreads, 0, s>>>(
        static_cast<const T*>(pre), static_cast<T*>(out), n, int(act), d);
  });
  LS_LAUNCH_CHECK("act_dropout_forward");
}

void launch_dropout_forward(const void* x, void* out, size_t n, float p, DropoutKey key, DType dt,
                            cudaStream_t s) {
  if (n == 0) return;
  DropoutParams d = make_dropout(p, key);
  dispatch_dtype(dt, "dropout_forward", [&](auto tv) {
    using T = decltype(tv);
    act_dropout_forward_kernel<T><<<flat_grid(int64_t(n)), kThreads, 0, s>>>(
        static_cast<const T*>(x), static_cast<T*>(out), int64_t(n), -1, d);
  });
  LS_LAUNCH_CHECK("dropout_forward");
}

void launch_act_dropout_backward(const void* d_out, const void* pre, void* d_pre, float* d_bias,
                                 int64_t rows, int64_t cols, int64_t ld, bool has_act,
                                 Activation act, float p, DropoutKey key, DType dt, cudaStream_t s,
                                 const Reduction& red) {
  launch_backward_colsum(d_out, has_act ? pre : nullptr, d_pre, d_bias, rows, cols, ld,
                         has_act ? int(act) : kNoAct, p, key, dt, s,
                         has_act ? "act_dropout_backward" : "dropout_bias_backward", red);
}

void launch_relu_dropout_backward_from_output(const void* d_out, const void* out, void* d_pre,
                                              float* d_bias, int64_t rows, int64_t cols, int64_t ld,
                                              float p, DType dt, cudaStream_t s,
                                              const Reduction& red) {
  launch_backward_colsum(d_out, out, d_pre, d_bias, rows, cols, ld, kReluFromOutput, p,
                         DropoutKey{}, dt, s, "relu_dropout_backward_from_output", red);
}

void launch_bias_grad(const void* dy, float* d_bias, int64_t rows, int64_t cols, int64_t ld,
                      DType dt, cudaStream_t s, const Reduction& red) {
  launch_backward_colsum(dy, nullptr, nullptr, d_bias, rows, cols, ld, kNoAct, 0.f, DropoutKey{},
                         dt, s, "bias_grad", red);
}

void launch_row_sums(const void* a, float* d_bias, int64_t rows, int64_t cols, int64_t ld, DType dt,
                     cudaStream_t s) {
  if (rows == 0) return;
  dispatch_dtype(dt, "gemm (bias grad of A)", [&](auto tv) {
    using T = decltype(tv);
    row_sums_kernel<T><<<grid_for(rows * 32, kThreads), kThreads, 0, s>>>(static_cast<const T*>(a),
                                                                          d_bias, rows, cols, ld);
  });
  LS_LAUNCH_CHECK("gemm (bias grad of A)");
}

void launch_activation(const void* in, void* out, int64_t rows, int64_t cols, int64_t ld,
                       Activation act, DType dt, cudaStream_t s) {
  if (rows * cols == 0) return;
  dispatch_dtype(dt, "gemm (activation)", [&](auto tv) {
    using T = decltype(tv);
    activation_kernel<T><<<grid_for(rows * cols, kThreads), kThreads, 0, s>>>(
        static_cast<const T*>(in), static_cast<T*>(out), rows, cols, ld, int(act));
  });
  LS_LAUNCH_CHECK("gemm (activation)");
}

}  // namespace cuda
}  // namespace ls
