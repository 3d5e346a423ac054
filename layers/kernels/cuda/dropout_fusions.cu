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
// the element's flat index in the [rows, cols] tensor (philox.h), eight elements per call.
// Layouts: flat kernels use 256 threads, each with 2 groups of 8 consecutive elements (16-byte
// accesses when aligned; all loads issued before the Philox call of each group) and a grid
// that covers the tensor once. Column-sum kernels use blocks of 32 x 8 threads covering a tile
// of 256 columns: thread x owns 8 columns (16-byte accesses), thread y walks rows with stride
// 8 * gridDim.y, 4 rows (fp32: 2) per step with their loads issued first (the last, shorter
// step too); gridDim.y is sized
// so that all blocks are resident at once. The 8 row-partials are reduced in shared memory and
// added to the fp32 gradient with one atomicAdd per column per block (so d_bias's summation
// order varies across runs), or, in deterministic mode, written to scratch rows
// [gridDim.y, cols] that reduce.cu sums in a fixed order. Kernels are specialised on the
// activation and on p > 0: with p == 0 no Philox code runs. GELU is evaluated as
// x * sigmoid(2u) with ex2 (cuda_common.cuh gelu_fast), the same function as the tanh form.
// The elementwise kernels read each element before writing it from the same thread, so every
// output may alias an input of the same shape (the FFN runs act_dropout_forward in place).
#include <type_traits>

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

// Calls run(integral_constant<int, ACT>{}, bool_constant<DROP>{}) for a runtime activation code
// (kNoAct, 0 = ReLU, 1 = GELU) and whether dropout is active: one compiled variant each, so
// p == 0 runs no Philox code and the activation is a constant.
template <class Run>
void dispatch_act_drop(int act, bool drop, const char* name, Run&& run) {
  auto with_drop = [&](auto act_c) {
    drop ? run(act_c, std::true_type{}) : run(act_c, std::false_type{});
  };
  switch (act) {
    case kNoAct:
      with_drop(std::integral_constant<int, kNoAct>{});
      return;
    case 0:
      with_drop(std::integral_constant<int, 0>{});
      return;
    case 1:
      with_drop(std::integral_constant<int, 1>{});
      return;
    default:
      LS_FAIL(LS_ERR_INTERNAL, name << ": unknown activation code " << act);
  }
}

// ---------------------------------------------------------------- flat kernels
// 256 threads; each thread owns kFlatGroups groups of 8 consecutive elements, group g of thread
// t in block b starting at ((b * kFlatGroups + g) * 256 + t) * 8 (a warp's accesses are 512
// contiguous bytes in fp16). All loads of a thread are issued before its Philox rounds, and
// the grid covers the tensor once (the grid-stride loop only runs again beyond 2^31 blocks).
constexpr int kFlatThreads = 256;
constexpr int kFlatGroups = 2;
constexpr int64_t kFlatPerBlock = int64_t(kFlatThreads) * kFlatGroups * 8;

inline unsigned flat_grid(int64_t n) {
  return grid_for((n + kFlatPerBlock - 1) / kFlatPerBlock, 1, int64_t(0x7fffffff));
}

template <int kAct>
__device__ __forceinline__ float act_forward(float x) {
  if (kAct == 0) return fmaxf(x, 0.f);
  if (kAct == 1) return gelu_fast(x);
  return x;
}

// aligned: x, residual and out are 16-byte aligned; bias_vec: also bias, and cols % 8 == 0
// (a group of 8 then never wraps a row and its bias columns are one aligned pack). cdiv
// divides by cols, for flat indices below fast_limit (2^32, or 0 when cols >= 2^32).
template <class T, bool kDrop, bool kBias>
__global__ void __launch_bounds__(kFlatThreads)
    bias_dropout_residual_kernel(const T* x, const T* bias, const T* residual, T* out, int64_t n,
                                 int64_t cols, FastDivU32 cdiv, int64_t fast_limit, bool aligned,
                                 bool bias_vec, DropoutParams d) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  const uint64_t off = kDrop ? dropout_offset(d.key) : 0;
  const int64_t step = int64_t(gridDim.x) * kFlatPerBlock;
  for (int64_t i0 = int64_t(blockIdx.x) * kFlatPerBlock + 8 * threadIdx.x; i0 < n; i0 += step) {
    Raw8<T> xa[kFlatGroups], ra[kFlatGroups], ba[kFlatGroups];
#pragma unroll
    for (int g = 0; g < kFlatGroups; ++g) {
      const int64_t i = i0 + g * (8 * kFlatThreads);
      const bool vec = aligned && i + 8 <= n;
      xa[g] = load_raw8(x, i, n, vec);
      ra[g] = load_raw8(residual, i, n, vec);
      if (kBias) {
        const int64_t col = i < fast_limit ? int64_t(cdiv.mod(uint32_t(i))) : i % cols;
        if (bias_vec && vec) {
          ba[g] = load_raw8(bias, col, cols, true);
        } else {
          T bv[8];
          int64_t c = col;
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            bv[j] = i + j < n ? bias[c] : from_f32<T>(0.f);
            if (++c == cols) c = 0;
          }
          ba[g] = raw8_from(bv);
        }
      }
    }
#pragma unroll
    for (int g = 0; g < kFlatGroups; ++g) {
      const int64_t i = i0 + g * (8 * kFlatThreads);
      if (i >= n) break;
      float a[8], r[8], b[8], f[8];
      if (kDrop) dropout_factors8_aligned(d, off, uint64_t(i), f);
      unpack8(xa[g], a);
      unpack8(ra[g], r);
      if (kBias) unpack8(ba[g], b);
#pragma unroll
      for (int j = 0; j < 8; ++j)
        a[j] = bias_dropout_residual_value<kBias, kDrop>(a[j], kBias ? b[j] : 0.f, r[j],
                                                         kDrop ? f[j] : 1.f);
      store8(out, i, n, aligned && i + 8 <= n, a);
    }
  }
}

// act < 0 (kNoAct): plain dropout. aligned: pre and out are 16-byte aligned.
template <class T, int kAct, bool kDrop>
__global__ void __launch_bounds__(kFlatThreads)
    act_dropout_forward_kernel(const T* pre, T* out, int64_t n, bool aligned, DropoutParams d) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  const uint64_t off = kDrop ? dropout_offset(d.key) : 0;
  const int64_t step = int64_t(gridDim.x) * kFlatPerBlock;
  for (int64_t i0 = int64_t(blockIdx.x) * kFlatPerBlock + 8 * threadIdx.x; i0 < n; i0 += step) {
    Raw8<T> pa[kFlatGroups];
#pragma unroll
    for (int g = 0; g < kFlatGroups; ++g) {
      const int64_t i = i0 + g * (8 * kFlatThreads);
      pa[g] = load_raw8(pre, i, n, aligned && i + 8 <= n);
    }
#pragma unroll
    for (int g = 0; g < kFlatGroups; ++g) {
      const int64_t i = i0 + g * (8 * kFlatThreads);
      if (i >= n) break;
      float a[8], f[8];
      if (kDrop) dropout_factors8_aligned(d, off, uint64_t(i), f);
      unpack8(pa[g], a);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        float v = act_forward<kAct>(a[j]);
        a[j] = kDrop ? v * f[j] : v;
      }
      store8(out, i, n, aligned && i + 8 <= n, a);
    }
  }
}

// ---------------------------------------------------------------- column-sum kernels
// Blocks of 32 x 8 threads over a tile of 256 columns: thread x owns 8 consecutive columns
// (16-byte accesses), thread y walks the rows y + 8 * blockIdx.y + k * 8 * gridDim.y, kColRows
// rows per step with all their loads issued first. Per column, the 8 row lanes' sums are added
// in y order through shared memory, then one atomicAdd per column per block (or one scratch
// row per blockIdx.y in deterministic mode). gridDim.y: the blocks that fit on the device at
// once, so every block runs in the first wave.
constexpr int kColThreadsX = 32;
constexpr int kColThreadsY = 8;
constexpr int kColTile = 8 * kColThreadsX;

template <int kAct>
__device__ __forceinline__ float act_backward(float x) {
  return kAct == 0 ? (x > 0.f ? 1.f : 0.f) : gelu_fast_grad(x);
}

// One row's 8 columns from their raw loads (see backward_colsum_kernel). kVec: the aligned
// path (cols % 8 == 0, so the flat index r * cols + c is a multiple of 8).
template <class T, int kAct, bool kDrop, bool kVec>
__device__ __forceinline__ void colsum_apply(const Raw8<T>& graw, const Raw8<T>& xraw, T* d_pre,
                                             int64_t r, int64_t c, int64_t cols, int64_t ld,
                                             const DropoutParams& d, uint64_t off, float acc[8]) {
  float g[8], x[8];
  unpack8(graw, g);
  if (kAct != kNoAct) unpack8(xraw, x);
  if (kAct == kReluFromOutput) {
#pragma unroll
    for (int j = 0; j < 8; ++j) g[j] *= x[j] > 0.f ? d.scale : 0.f;
  } else {
    if (kDrop) {
      float f[8];
      if (kVec)
        dropout_factors8_aligned(d, off, uint64_t(r * cols + c), f);
      else
        dropout_factors8(d, off, uint64_t(r * cols + c), f);
#pragma unroll
      for (int j = 0; j < 8; ++j) g[j] *= f[j];
    }
    if (kAct >= 0) {
#pragma unroll
      for (int j = 0; j < 8; ++j) g[j] *= act_backward<kAct>(x[j]);
    }
  }
  if (d_pre != nullptr) store8(d_pre + r * ld, c, cols, kVec, g);
#pragma unroll
  for (int j = 0; j < 8; ++j) acc[j] += g[j];
}

// d_pre = [act'(pre)] * dropout_bwd(d_out) over [rows, cols] (leading dimension ld), plus
// d_bias += column sums of d_pre. kAct == kNoAct: no activation; kAct == kReluFromOutput:
// d_pre = d_out * (pre > 0 ? d.scale : 0) with pre the ReLU forward's output (no Philox);
// d_pre null: sums only. aligned: cols % 8 == 0, ld % 8 == 0 and every pointer 16-byte
// aligned. kDrop: p > 0 (masks drawn; never with kReluFromOutput).
template <class T, int kAct, bool kDrop>
__global__ void __launch_bounds__(kColThreadsX* kColThreadsY, 3)
    backward_colsum_kernel(const T* d_out, const T* pre, T* d_pre, float* d_bias, int64_t rows,
                           int64_t cols, int64_t ld, bool aligned, DropoutParams d,
                           float* partials) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  constexpr bool kPre = kAct != kNoAct;
  constexpr int kColRows = sizeof(T) == 4 ? 2 : 4;  // 32 or 64 bytes per input in flight
  __shared__ __align__(16) float partial[kColThreadsY][kColTile];
  const int64_t c = (int64_t(blockIdx.x) * kColThreadsX + threadIdx.x) * 8;
  const int64_t stride = int64_t(gridDim.y) * kColThreadsY;
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  if (c < cols) {
    const bool vec = aligned && c + 8 <= cols;
    const uint64_t off = kDrop ? dropout_offset(d.key) : 0;
    int64_t r = int64_t(blockIdx.y) * kColThreadsY + threadIdx.y;
    if (vec) {  // kColRows rows per step, all loads first
      for (; r + (kColRows - 1) * stride < rows; r += kColRows * stride) {
        Raw8<T> g[kColRows], x[kColRows];
#pragma unroll
        for (int u = 0; u < kColRows; ++u) {
          g[u] = load_raw8(d_out + (r + u * stride) * ld, c, cols, true);
          if (kPre) x[u] = load_raw8(pre + (r + u * stride) * ld, c, cols, true);
        }
#pragma unroll
        for (int u = 0; u < kColRows; ++u)
          colsum_apply<T, kAct, kDrop, true>(g[u], x[u], d_pre, r + u * stride, c, cols, ld, d, off,
                                             acc);
      }
      // The last (fewer than kColRows) rows: their loads in flight together as well, where one
      // row at a time waited for each in turn (a thread has only ~4-10 rows at 8192 rows).
      if (r < rows) {
        Raw8<T> g[kColRows - 1], x[kColRows - 1];
#pragma unroll
        for (int u = 0; u < kColRows - 1; ++u) {
          if (r + u * stride >= rows) break;
          g[u] = load_raw8(d_out + (r + u * stride) * ld, c, cols, true);
          if (kPre) x[u] = load_raw8(pre + (r + u * stride) * ld, c, cols, true);
        }
#pragma unroll
        for (int u = 0; u < kColRows - 1; ++u) {
          if (r + u * stride >= rows) break;
          colsum_apply<T, kAct, kDrop, true>(g[u], x[u], d_pre, r + u * stride, c, cols, ld, d, off,
                                             acc);
        }
        r = rows;
      }
    }
#pragma unroll 1
    for (; r < rows; r += stride) {  // not vec: one row at a time
      Raw8<T> g, x;
      g = load_raw8(d_out + r * ld, c, cols, vec);
      if (kPre) x = load_raw8(pre + r * ld, c, cols, vec);
      if (vec)
        colsum_apply<T, kAct, kDrop, true>(g, x, d_pre, r, c, cols, ld, d, off, acc);
      else
        colsum_apply<T, kAct, kDrop, false>(g, x, d_pre, r, c, cols, ld, d, off, acc);
    }
  }
  if (d_bias == nullptr) return;
  float4* dst = reinterpret_cast<float4*>(&partial[threadIdx.y][8 * threadIdx.x]);
  dst[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
  dst[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
  __syncthreads();
  const int t = threadIdx.y * kColThreadsX + threadIdx.x;  // one column of the tile each
  const int64_t col = int64_t(blockIdx.x) * kColTile + t;
  if (col >= cols) return;
  float s = 0.f;
#pragma unroll
  for (int y = 0; y < kColThreadsY; ++y) s += partial[y][t];
  if (partials != nullptr)
    partials[int64_t(blockIdx.y) * cols + col] = s;  // deterministic: summed by reduce.cu
  else
    atomicAdd(d_bias + col, s);
}

template <class T>
__global__ void row_sums_kernel(const T* a, float* out, int64_t rows, int64_t cols, int64_t ld) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
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
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  int64_t n = rows * cols;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off = (i / cols) * ld + i % cols;
    out[off] = from_f32<T>(activate(act, to_f32(in[off])));
  }
}

template <class T, int kAct, bool kDrop>
void launch_colsum_variant(const void* d_out, const void* pre, void* d_pre, float* d_bias,
                           int64_t rows, int64_t cols, int64_t ld, const DropoutParams& d,
                           cudaStream_t s, const char* name, const Reduction& red) {
  auto kernel = backward_colsum_kernel<T, kAct, kDrop>;
  constexpr int kBlock = kColThreadsX * kColThreadsY;
  static const int per_sm = [&] {  // resident blocks per SM (a property of the kernel)
    int b = 0;
    LS_CUDA_CALL(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, kernel, kBlock, 0));
    return b > 0 ? b : 1;
  }();
  const int64_t gx = (cols + kColTile - 1) / kColTile;
  int64_t gy = (rows + kColThreadsY - 1) / kColThreadsY;
  int64_t want = int64_t(device_sm_count()) * per_sm / gx;  // one wave of resident blocks
  if (want < 1) want = 1;
  if (gy > want) gy = want;
  if (gy > 65535) gy = 65535;
  bool aligned = cols % 8 == 0 && ld % 8 == 0 && aligned16(d_out);
  for (const void* p : {pre, static_cast<const void*>(d_pre)})
    if (p != nullptr && !aligned16(p)) aligned = false;
  float* partials = d_bias != nullptr && red.deterministic() ? red.rows(gy, cols, name) : nullptr;
  launch_kernel(name, kernel, dim3(unsigned(gx), unsigned(gy)), dim3(kColThreadsX, kColThreadsY), 0,
                s, static_cast<const T*>(d_out), static_cast<const T*>(pre), static_cast<T*>(d_pre),
                d_bias, rows, cols, ld, aligned, d, partials);
  if (partials != nullptr) launch_sum_partials(partials, gy, cols, d_bias, s);
}

void launch_backward_colsum(const void* d_out, const void* pre, void* d_pre, float* d_bias,
                            int64_t rows, int64_t cols, int64_t ld, int act, float p,
                            DropoutKey key, DType dt, cudaStream_t s, const char* name,
                            const Reduction& red) {
  if (rows == 0 || cols == 0) return;
  const DropoutParams d = make_dropout(p, key);
  dispatch_dtype(dt, name, [&](auto tv) {
    using T = decltype(tv);
    auto run = [&](auto act_c, auto drop_c) {
      launch_colsum_variant<T, decltype(act_c)::value, decltype(drop_c)::value>(
          d_out, pre, d_pre, d_bias, rows, cols, ld, d, s, name, red);
    };
    if (act == kReluFromOutput)  // the mask comes from the output: no dropout variant
      run(std::integral_constant<int, kReluFromOutput>{}, std::false_type{});
    else
      dispatch_act_drop(act, d.active, name, run);
  });
}

}  // namespace

void launch_bias_dropout_residual(const void* x, const void* bias, const void* residual, void* out,
                                  int64_t rows, int64_t cols, float p, DropoutKey key, DType dt,
                                  cudaStream_t s) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  const DropoutParams d = make_dropout(p, key);
  const bool aligned = aligned16(x) && aligned16(residual) && aligned16(out);
  const bool bias_vec = aligned && bias != nullptr && aligned16(bias) && cols % 8 == 0;
  const bool small_cols = cols < (int64_t(1) << 32);
  const FastDivU32 cdiv(small_cols ? uint32_t(cols) : 1u);
  const int64_t fast_limit = small_cols ? (int64_t(1) << 32) : 0;
  dispatch_dtype(dt, "bias_dropout_residual_forward", [&](auto tv) {
    using T = decltype(tv);
    auto run = [&](auto drop_c, auto bias_c) {
      launch_kernel(
          "bias_dropout_residual_forward",
          bias_dropout_residual_kernel<T, decltype(drop_c)::value, decltype(bias_c)::value>,
          flat_grid(n), kFlatThreads, 0, s, static_cast<const T*>(x), static_cast<const T*>(bias),
          static_cast<const T*>(residual), static_cast<T*>(out), n, cols, cdiv, fast_limit, aligned,
          bias_vec, d);
    };
    dispatch_flags(d.active, bias != nullptr, run);
  });
}

namespace {
// out = dropout(act(pre)) over n flat elements; act kNoAct: plain dropout.
void launch_flat_act_dropout(const void* pre, void* out, int64_t n, int act, float p,
                             DropoutKey key, DType dt, cudaStream_t s, const char* name) {
  const DropoutParams d = make_dropout(p, key);
  const bool aligned = aligned16(pre) && aligned16(out);
  dispatch_dtype(dt, name, [&](auto tv) {
    using T = decltype(tv);
    auto run = [&](auto act_c, auto drop_c) {
      launch_kernel(name,
                    act_dropout_forward_kernel<T, decltype(act_c)::value, decltype(drop_c)::value>,
                    flat_grid(n), kFlatThreads, 0, s, static_cast<const T*>(pre),
                    static_cast<T*>(out), n, aligned, d);
    };
    dispatch_act_drop(act, d.active, name, run);
  });
}
}  // namespace

void launch_act_dropout_forward(const void* pre, void* out, int64_t rows, int64_t cols,
                                Activation act, float p, DropoutKey key, DType dt, cudaStream_t s) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  launch_flat_act_dropout(pre, out, n, int(act), p, key, dt, s, "act_dropout_forward");
}

void launch_dropout_forward(const void* x, void* out, size_t n, float p, DropoutKey key, DType dt,
                            cudaStream_t s) {
  if (n == 0) return;
  launch_flat_act_dropout(x, out, int64_t(n), kNoAct, p, key, dt, s, "dropout_forward");
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
    launch_kernel("gemm (bias grad of A)", row_sums_kernel<T>, grid_for(rows * 32, kThreads),
                  kThreads, 0, s, static_cast<const T*>(a), d_bias, rows, cols, ld);
  });
}

void launch_activation(const void* in, void* out, int64_t rows, int64_t cols, int64_t ld,
                       Activation act, DType dt, cudaStream_t s) {
  if (rows * cols == 0) return;
  dispatch_dtype(dt, "gemm (activation)", [&](auto tv) {
    using T = decltype(tv);
    launch_kernel("gemm (activation)", activation_kernel<T>, grid_for(rows * cols, kThreads),
                  kThreads, 0, s, static_cast<const T*>(in), static_cast<T*>(out), rows, cols, ld,
                  int(act));
  });
}

}  // namespace cuda
}  // namespace ls
