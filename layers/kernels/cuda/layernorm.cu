// LayerNorm over the last dimension, forward and backward, statistics in fp32.
// Forward: one warp per row (blocks of 4 warps), y = (x - mean) * rstd * gamma + beta, mean and
//   rstd [rows] saved. Two-pass statistics (mean, then the centred sum of squares). Rows of up
//   to 256 16-byte packs (2048 fp16/bf16, 1024 fp32 columns) with aligned pointers stay in
//   registers (one read of x); otherwise the row is re-read from L1/L2 for each pass, with
//   16-byte packed loads when cols and the pointers allow.
// Backward: g = dy * gamma, xhat = (x - mean) * rstd,
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) (+ d_residual),
//   d_gamma += column sums of dy * xhat, d_beta += column sums of dy (fp32, accumulated).
//   Register path (cols <= 8192 fp16/bf16, 4096 fp32): a team of TEAM warps (1, 2, 4 or 8) per
//   row; blocks of 4 warps (8 when TEAM = 8), i.e. 4 / TEAM teams, walk rows with a grid
//   stride, the grid sized to the blocks that fit on the device at once, and to at least 4
//   rows per team. Thread t of a team
//   owns the P 16-byte packs of N = 16 / sizeof(T) columns starting at (t + 32 * TEAM * i) * N,
//   i < P <= 4, in every row it visits (TEAM: the fewest warps with P <= 4, i.e. up to 1024 *
//   TEAM fp16 columns), which lets it:
//   - read dy and x once (16-byte loads when cols % N == 0 and the pointers are aligned, else
//     element loads with bounds) and keep them in registers, in the storage type, for both the
//     row sums and dx;
//   - own its columns' d_gamma / d_beta running sums in fp32 in shared memory, next to gamma
//     in fp32 (float4 layouts with consecutive threads at consecutive addresses: no atomics,
//     no bank conflicts; (2 x block threads + team threads) x P x N floats, <= 96 KiB).
//     Holding the sums in registers instead would take 2 registers per column and leave too
//     few resident warps to keep enough loads in flight (measured: ~60% of copy bandwidth in
//     fp16 against ~90% this way).
//   - name the team's next row of dy and x and this row's residual gradient to L2 while the
//     row's loads are in flight (prefetch_l2), so that the next row's loads hit L2.
//   Row sums: warp shuffles, then (TEAM > 1) one exchange through shared memory per row behind
//   a named barrier of the team's warps. At the end the block sums each column over its teams
//   and adds it into d_gamma / d_beta with one atomicAdd per column per block (on sm_90, one
//   16-byte atomicAdd per 4 columns; a few blocks per SM, so few atomics; the summation order
//   is not deterministic across runs), or, for the
//   deterministic mode (launch_layernorm_backward_partials), stores it as that block's row of
//   [2][blocks][cols] partials that the grid's last blocks add in a fixed order
//   (partial_sums.cuh; bitwise reproducible for a given device: the grid and every summation
//   order are fixed).
//   Fallback (longer rows): one warp per row, two passes over the row (the second from L1/L2),
//   column partials through shared-memory atomics (2 * cols * 4 bytes <= 96 KiB), or, for rows
//   longer still, a separate column-sum kernel (32 x 8 thread tiles).
// Backward from the output (FROM_OUTPUT, a template parameter of every backward kernel here and
//   in layernorm_param_grad.cu; LnXhatSource picks it): the same kernels given the forward's
//   output y and beta instead of x and mean, xhat = (y - beta) / gamma (no mean load; rstd is
//   still read per row). The register kernel keeps its per-column values in shared memory in
//   the float4 layout of gamma: for fp16/bf16 the (gamma, -beta) pairs in the storage type
//   (exact; one 32-bit word per column, where the input variant keeps gamma in fp32) and
//   1 / gamma in fp32; the row sums use g * xhat = dy * (y - beta), so the first pass reads one
//   word per column, as from the input, and the second two (xhat = (y - beta) * (1 / gamma)).
//   fp32 keeps gamma, 1 / gamma and -beta / gamma (xhat = fmaf(y, 1 / gamma, -beta / gamma)).
//   Rows of 8 warps may need more shared memory than a device gives a block (sm_86 / sm_89):
//   such rows take the fallback. A zero gamma gives non-finite dx and d_gamma.
// Backward with the output (WRITE_Y, from the input only; layernorm_backward_with_output): the
//   register kernel also writes the forward's output y = ln_output(x, mean, rstd, gamma, beta)
//   (the forward kernels' own expression, hence their bits) from the x it holds, with beta in
//   fp32 in shared memory beside gamma: one more [rows, cols] store, so that a pre-LN block need
//   not keep LN(x) for backward. Longer rows: the fallback, then layernorm_output_kernel.
// Shapes: x, y, dy, dx, d_residual [rows, cols] (dt); gamma, beta [cols] (dt);
//   mean, rstd [rows], d_gamma, d_beta [cols] (fp32).
#include <cstring>
#include <type_traits>

#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"
#include "layers/kernels/cuda/layernorm_row.cuh"
#include "layers/kernels/cuda/partial_sums.cuh"

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
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
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
    for (int j = 0; j < N; ++j) v[j] = ln_output(v[j], mean, rstd, g[j], b[j]);
    store_n<N, VEC>(yr, c, cols, v);
  }
  if (lane == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// Register path of the forward (cols <= 32 x P x N, cols % N == 0, 16-byte aligned pointers):
// lane l of the row's warp owns the packs of N = 16 / sizeof(T) columns starting at
// (l + 32 i) * N, i < P, and keeps them in registers, so the row is read from memory once
// (the general kernel above re-reads it from L1/L2 for the centred sum and for y). The
// statistics and y: layernorm_row_forward (layernorm_row.cuh), shared with the fused residual
// add + LayerNorm (residual_layernorm.cu), which therefore writes the same bits.
template <class T, int P>
__global__ void __launch_bounds__(128)
    layernorm_forward_register_kernel(const T* __restrict__ x, const T* __restrict__ gamma,
                                      const T* __restrict__ beta, T* __restrict__ y,
                                      float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                      int64_t rows, int64_t cols, float eps) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  constexpr int N = Pack16<T>::kElems;
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* xr = x + row * cols;
  Pack16<T> xp[P];
#pragma unroll
  for (int i = 0; i < P; ++i) {
    const int64_t c = int64_t(lane + 32 * i) * N;
    if (c < cols) {
      xp[i] = *reinterpret_cast<const Pack16<T>*>(xr + c);
    } else {
#pragma unroll
      for (int j = 0; j < N; ++j) xp[i].v[j] = from_f32<T>(0.f);
    }
  }
  float mean, rstd;
  layernorm_row_forward<T, P>(xp, lane, cols, eps, gamma, beta, y + row * cols, mean, rstd);
  if (lane == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// The forward's output from its input and saved statistics, y = ln_output(x, mean, rstd, ...):
// the backward's recomputed output for rows beyond the register path. One warp per row.
template <class T, bool VEC>
__global__ void layernorm_output_kernel(const T* __restrict__ x, const T* __restrict__ gamma,
                                        const T* __restrict__ beta, const float* __restrict__ mean,
                                        const float* __restrict__ rstd, T* __restrict__ y,
                                        int64_t rows, int64_t cols) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  constexpr int N = lane_elems<T, VEC>();
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;
  const float mu = mean[row], rs = rstd[row];
  for (int64_t c = int64_t(threadIdx.x & 31) * N; c < cols; c += 32 * N) {
    float v[N], g[N], b[N];
    load_n<N, VEC>(x + row * cols, c, cols, v);
    load_n<N, VEC>(gamma, c, cols, g);
    load_n<N, VEC>(beta, c, cols, b);
#pragma unroll
    for (int j = 0; j < N; ++j) v[j] = ln_output(v[j], mu, rs, g[j], b[j]);
    store_n<N, VEC>(y + row * cols, c, cols, v);
  }
}

// xhat of one element from the forward's output (the FROM_OUTPUT kernels' column sums and
// fallback).
__device__ __forceinline__ float ln_xhat_from_output(float y, float beta, float gamma) {
  return (y - beta) / gamma;
}

// SHARED: accumulate d_gamma/d_beta through shared-memory partials (2 * cols floats).
// FROM_OUTPUT: x is the forward's output y, beta is read and mean is not (see the header).
template <class T, bool VEC, bool SHARED, bool FROM_OUTPUT>
__global__ void layernorm_backward_kernel(
    const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ gamma,
    const float* __restrict__ mean, const T* __restrict__ beta, const float* __restrict__ rstd,
    const T* d_residual, T* dx, float* d_gamma, float* d_beta, int64_t rows, int64_t cols) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
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
    float mu = FROM_OUTPUT ? 0.f : mean[row], rs = rstd[row];
    float sum_g = 0.f, sum_gx = 0.f;
    for (int64_t c = int64_t(lane) * N; c < cols; c += 32 * N) {
      float d[N], v[N], g[N], b[N];
      load_n<N, VEC>(dyr, c, cols, d);
      load_n<N, VEC>(xr, c, cols, v);
      load_n<N, VEC>(gamma, c, cols, g);
      if (FROM_OUTPUT) load_n<N, VEC>(beta, c, cols, b);
#pragma unroll
      for (int j = 0; j < N; ++j) {
        float gj = d[j] * g[j];
        sum_g += gj;
        if (!FROM_OUTPUT)
          sum_gx += gj * (v[j] - mu) * rs;
        else if (VEC || c + j < cols)  // past the row: (0 - 0) / 0
          sum_gx += gj * ln_xhat_from_output(v[j], b[j], g[j]);
      }
    }
    float inv_cols = 1.f / float(cols);
    float mean_g = warp_sum(sum_g) * inv_cols;
    float mean_gx = warp_sum(sum_gx) * inv_cols;
    for (int64_t c = int64_t(lane) * N; c < cols; c += 32 * N) {
      float d[N], v[N], g[N], b[N], out[N];
      load_n<N, VEC>(dyr, c, cols, d);
      load_n<N, VEC>(xr, c, cols, v);
      load_n<N, VEC>(gamma, c, cols, g);
      if (FROM_OUTPUT) load_n<N, VEC>(beta, c, cols, b);
      if (d_residual != nullptr) {
        load_n<N, VEC>(d_residual + row * cols, c, cols, out);
      } else {
#pragma unroll
        for (int j = 0; j < N; ++j) out[j] = 0.f;
      }
#pragma unroll
      for (int j = 0; j < N; ++j) {
        float xhat = FROM_OUTPUT ? ln_xhat_from_output(v[j], b[j], g[j]) : (v[j] - mu) * rs;
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
// FROM_OUTPUT: x is the forward's output y; gamma and beta are read instead of mean and rstd.
template <class T, bool FROM_OUTPUT>
__global__ void layernorm_param_grad_kernel(const T* dy, const T* x, const T* gamma,
                                            const float* mean, const T* beta, const float* rstd,
                                            float* d_gamma, float* d_beta, int64_t rows,
                                            int64_t cols) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  __shared__ float pg[8][33], pb[8][33];
  int64_t c = int64_t(blockIdx.x) * 32 + threadIdx.x;
  float ag = 0.f, ab = 0.f;
  if (c < cols) {
    const float gc = FROM_OUTPUT ? to_f32(gamma[c]) : 0.f, bc = FROM_OUTPUT ? to_f32(beta[c]) : 0.f;
    for (int64_t r = int64_t(blockIdx.y) * 8 + threadIdx.y; r < rows; r += int64_t(gridDim.y) * 8) {
      float d = to_f32(dy[r * cols + c]);
      if (FROM_OUTPUT)
        ag += d * ln_xhat_from_output(to_f32(x[r * cols + c]), bc, gc);
      else
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

constexpr int kLnBwdMaxPacks = 4;  // 16-byte packs per thread and row: the register bound
constexpr int kLnBwdMaxTeam = 8;   // warps per row
// Largest row on the register path: 8 warps x 32 threads x 4 packs = 8192 fp16/bf16, 4096 fp32.
template <class T>
constexpr int64_t ln_bwd_register_max_cols() {
  return int64_t(kLnBwdMaxTeam) * 32 * kLnBwdMaxPacks * int64_t(16 / sizeof(T));
}
// Warps per block: 4 (finer steps of occupancy) unless a row needs all 8.
constexpr int ln_bwd_block_warps(int team) {
  return team > 4 ? team : 4;
}
// From the output with 16-bit storage, the per-column (gamma, -beta) pairs are kept packed in
// their storage type (exact), one 32-bit word per column, next to 1 / gamma in fp32.
template <class T, bool FROM_OUTPUT>
constexpr bool ln_bwd_packed_pairs() {
  return FROM_OUTPUT && sizeof(T) == 2;
}
// Dynamic shared memory: the column partials, 2 (d_gamma, d_beta) x block threads x P x N fp32,
// then per column, team threads x P x N words each: from the input gamma in fp32; from the
// output (gamma, -beta) pairs and 1 / gamma (16-bit storage), or gamma, 1 / gamma and
// -beta / gamma in fp32 (see the kernel for the layouts).
// WRITE_Y (from the input only): beta in fp32 as well, for the recomputed output.
template <class T, int TEAM, int P, bool FROM_OUTPUT, bool WRITE_Y>
constexpr size_t ln_bwd_shared_bytes() {
  constexpr int kColumnArrays = !FROM_OUTPUT                            ? (WRITE_Y ? 2 : 1)
                                : ln_bwd_packed_pairs<T, FROM_OUTPUT>() ? 2
                                                                        : 3;
  return (size_t(2) * ln_bwd_block_warps(TEAM) + kColumnArrays * TEAM) * 32 * P * (16 / sizeof(T)) *
         sizeof(float);
}
// Blocks per SM the register kernel is compiled for (__launch_bounds__; 0: no bound, ptxas's
// choice; even a bound of 1 changes that choice, hence 0 elsewhere). fp32 from the output,
// TEAM 1 or 2, P 4 (257-1024 columns): 7 blocks, the from-input kernel's count (72 registers
// both, no spill; CUDA 13.0, sm_90). fp16 from the output was bound to 5 blocks (96 registers,
// a spill) until the residual gradient was loaded up front: unbounded it takes 124 registers
// and 4 blocks, and 65536 x 1024 went from 76% to 82% of copy (81% with the residual).
// (fp16/bf16 TEAM 1, P 1 takes 60 registers against 56, 8 blocks against 9: bound to 9 it
// spilled in the row loop.) fp16/bf16 writing y, P 4, blocks of 4 warps: 4 blocks (128
// registers, 14 bytes of spill) against ptxas's 144 registers and 3 blocks: 65536 x 1024 with
// the residual 83.4% of copy against 79.6%, the encoder layer 1.17 against 1.23 ms (H200).
template <class T, int TEAM, int P, bool FROM_OUTPUT, bool WRITE_Y>
constexpr int ln_bwd_min_blocks() {
  if (WRITE_Y && sizeof(T) == 2 && P == kLnBwdMaxPacks && TEAM <= 4) return 4;
  if (!FROM_OUTPUT || P != kLnBwdMaxPacks) return 0;
  if (std::is_same<T, float>::value) return TEAM <= 2 ? 7 : 0;
  return 0;
}

template <class T, int N>
__device__ __forceinline__ void load_pack(const T* row, int64_t c, int64_t cols, bool vec,
                                          PackN<T, N>& out) {
  if (vec) {
    out = *reinterpret_cast<const PackN<T, N>*>(row + c);
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) out.v[j] = c + j < cols ? row[c + j] : from_f32<T>(0.f);
  }
}

// Makes the pack's bits opaque to the compiler, so that its fp32 conversions are redone after
// this point instead of being kept live (which would hold 4 bytes per element in registers
// across the row reductions instead of 2 for fp16/bf16).
template <class T, int N>
__device__ __forceinline__ void launder(PackN<T, N>& p) {
  uint4 w;
  memcpy(&w, &p, sizeof(w));
  asm volatile("" : "+r"(w.x), "+r"(w.y), "+r"(w.z), "+r"(w.w));
  memcpy(&p, &w, sizeof(w));
}

// Register path of the backward (see the header). Thread t of a team owns the columns
// [(t + 32 * TEAM * i) * N, + N), i < P, in every row. `vec`: cols % N == 0 and every pointer
// 16-byte aligned (packed access); else element access with bounds.
// FROM_OUTPUT: x is the forward's output y, beta is read and mean is not (xhat from the output).
// WRITE_Y (from the input only): also writes the forward's output y = LN(x) into y_out, from x
//   and the saved mean / rstd through ln_output (the forward's bits); beta_f holds beta in fp32.
// Shared memory, as float4 so that a warp's accesses are consecutive (no bank conflicts):
//   partials[((a * P + i) * Q + q) * kThreads + thread]: running sums of array a (0: d_gamma,
//     1: d_beta), pack i, quarter q (elements 4q .. 4q + 3), owned by one thread (no atomics);
//   gamma_f[(i * Q + q) * kTeamThreads + t]: gamma of the same columns, in fp32;
//   FROM_OUTPUT: inv_gamma_f and shift_f, the same for 1 / gamma and -beta / gamma.
template <class T, int TEAM, int P, bool FROM_OUTPUT, bool WRITE_Y>
__global__ void __launch_bounds__(32 * ln_bwd_block_warps(TEAM),
                                  ln_bwd_min_blocks<T, TEAM, P, FROM_OUTPUT, WRITE_Y>())
    layernorm_backward_register_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                       const T* __restrict__ gamma, const float* __restrict__ mean,
                                       const T* __restrict__ beta, const float* __restrict__ rstd,
                                       const T* d_residual, T* dx, T* y_out, float* d_gamma,
                                       float* d_beta, PartialSums sums, int64_t rows, int64_t cols,
                                       bool vec) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  static_assert(!(FROM_OUTPUT && WRITE_Y), "the output is recomputed from the input only");
  constexpr int N = int(16 / sizeof(T));
  constexpr int Q = N / 4;
  constexpr int kWarps = ln_bwd_block_warps(TEAM);
  constexpr int kThreads = 32 * kWarps;
  constexpr int kTeams = kWarps / TEAM;
  constexpr int kTeamThreads = 32 * TEAM;
  constexpr int kStride = kTeamThreads * N;  // columns between a thread's packs
  __shared__ float row_sums[2][kWarps][2];   // per-warp row sums, double-buffered by row
  extern __shared__ float4 shared_f4[];
  float4* partials = shared_f4;
  float4* gamma_f = shared_f4 + 2 * P * Q * kThreads;
  constexpr bool kPacked = ln_bwd_packed_pairs<T, FROM_OUTPUT>();
  // kPacked: gamma_f holds (gamma, -beta) pairs in T, one per 32-bit word (pair_at reads them).
  float4* inv_gamma_f = gamma_f + P * Q * kTeamThreads;  // FROM_OUTPUT only
  float4* shift_f = inv_gamma_f + P * Q * kTeamThreads;  // FROM_OUTPUT, 32-bit T only
  float4* beta_f = gamma_f + P * Q * kTeamThreads;       // WRITE_Y only (the same slot)
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const int team = warp / TEAM;
  const int t = (warp % TEAM) * 32 + lane;
  auto col = [&](int i) { return int64_t(t) * N + int64_t(i) * kStride; };

#pragma unroll
  for (int k = 0; k < 2 * P * Q; ++k)
    partials[k * kThreads + threadIdx.x] = make_float4(0, 0, 0, 0);
  for (int k = threadIdx.x; k < P * Q * kTeamThreads; k += kThreads) {
    const int tt = k % kTeamThreads, iq = k / kTeamThreads;
    const int64_t c = (int64_t(tt) + int64_t(kTeamThreads) * (iq / Q)) * N + 4 * (iq % Q);
    float g[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) g[j] = c + j < cols ? to_f32(gamma[c + j]) : 0.f;
    if (kPacked) {
      // Past the row: (0, 0) and 1 / gamma = 0, so zero-filled elements there give xhat = 0.
      float words[4], ig[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const bool in = c + j < cols;
        PackN<T, 2> pair;
        pair.v[0] = in ? gamma[c + j] : from_f32<T>(0.f);
        pair.v[1] = in ? from_f32<T>(-to_f32(beta[c + j])) : from_f32<T>(0.f);  // exact
        memcpy(&words[j], &pair, sizeof(float));
        ig[j] = in ? 1.f / g[j] : 0.f;
      }
      gamma_f[k] = make_float4(words[0], words[1], words[2], words[3]);
      inv_gamma_f[k] = make_float4(ig[0], ig[1], ig[2], ig[3]);
    } else {
      gamma_f[k] = make_float4(g[0], g[1], g[2], g[3]);
    }
    if (WRITE_Y) {
      float b[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = c + j < cols ? to_f32(beta[c + j]) : 0.f;
      beta_f[k] = make_float4(b[0], b[1], b[2], b[3]);
    }
    if (FROM_OUTPUT && !kPacked) {
      // Past the row: 0 (not 1 / 0), so that the zero-filled elements there give xhat = 0.
      float ig[4], sh[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const bool in = c + j < cols;
        ig[j] = in ? 1.f / g[j] : 0.f;
        sh[j] = in ? -to_f32(beta[c + j]) / g[j] : 0.f;
      }
      inv_gamma_f[k] = make_float4(ig[0], ig[1], ig[2], ig[3]);
      shift_f[k] = make_float4(sh[0], sh[1], sh[2], sh[3]);
    }
  }
  __syncthreads();
  // The N per-column values of pack i from one of the arrays above.
  auto column_at = [&](const float4* arr, int i, float out[N]) {
#pragma unroll
    for (int q = 0; q < Q; ++q) {
      float4 v4 = arr[(i * Q + q) * kTeamThreads + t];
      out[4 * q] = v4.x;
      out[4 * q + 1] = v4.y;
      out[4 * q + 2] = v4.z;
      out[4 * q + 3] = v4.w;
    }
  };
  // kPacked: gamma and -beta of pack i's columns from their pairs.
  auto pair_at = [&](int i, float gm[N], float neg_beta[N]) {
#pragma unroll
    for (int q = 0; q < Q; ++q) {
      const float4 v4 = gamma_f[(i * Q + q) * kTeamThreads + t];
      const float words[4] = {v4.x, v4.y, v4.z, v4.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        PackN<T, 2> pair;
        memcpy(&pair, &words[j], sizeof(float));
        gm[4 * q + j] = to_f32(pair.v[0]);
        neg_beta[4 * q + j] = to_f32(pair.v[1]);
      }
    }
  };
  // xhat = x * scale + shift: from the input rs and -mean * rs (the row's), from the output
  // (32-bit storage) 1 / gamma and -beta / gamma (pack i's columns).
  auto xhat_coefs = [&](int i, float rs, float row_shift, float scale[N], float shift[N]) {
    if (FROM_OUTPUT) {
      column_at(inv_gamma_f, i, scale);
      column_at(shift_f, i, shift);
    } else {
#pragma unroll
      for (int j = 0; j < N; ++j) {
        scale[j] = rs;
        shift[j] = row_shift;
      }
    }
  };
  const float inv_cols = 1.f / float(cols);

  // base is uniform over the block, so every thread of a team runs the same iterations (the
  // team exchange synchronises the team); rows past the end only take part in the exchange.
  int parity = 0;
  for (int64_t base = int64_t(blockIdx.x) * kTeams; base < rows;
       base += int64_t(gridDim.x) * kTeams, parity ^= 1) {
    const int64_t row = base + team;
    const bool active = row < rows;
    PackN<T, N> dyp[P], xp[P];
    float mu = 0.f, rs = 0.f, sum_g = 0.f, sum_gx = 0.f;
    if (active) {
      if (!FROM_OUTPUT) mu = mean[row];
      rs = rstd[row];
#pragma unroll
      for (int i = 0; i < P; ++i) {
        if (col(i) < cols) {
          load_pack<T, N>(dy + row * cols, col(i), cols, vec, dyp[i]);
          load_pack<T, N>(x + row * cols, col(i), cols, vec, xp[i]);
        } else {
#pragma unroll
          for (int j = 0; j < N; ++j) dyp[i].v[j] = xp[i].v[j] = from_f32<T>(0.f);
        }
      }
      // Into L2 while those loads are in flight (prefetch_l2): this row's residual gradient,
      // loaded after the row sums, and the team's next row of dy and x, which it loads after
      // this row's stores. Without, each warp waited for DRAM at every row (one wave of
      // blocks, a few rows per team; ncu: 43% long-scoreboard stalls). With, the backward with
      // the output at 8192 x 1024 fp16 took 4-7% less time in the big and base steps.
      {
        const int64_t row_bytes = cols * int64_t(sizeof(T)),
                      next = row + int64_t(gridDim.x) * kTeams;
        if (d_residual != nullptr)
          prefetch_span_l2(d_residual + row * cols, row_bytes, t, kTeamThreads);
        if (next < rows) {
          prefetch_span_l2(dy + next * cols, row_bytes, t, kTeamThreads);
          prefetch_span_l2(x + next * cols, row_bytes, t, kTeamThreads);
        }
      }
      const float shift = -mu * rs;  // from the input: xhat = x * rs + shift
#pragma unroll
      for (int i = 0; i < P; ++i) {
        if (kPacked) {
          // g * xhat = dy * gamma * (y - beta) / gamma = dy * (y - beta): no 1 / gamma here.
          float gm[N], nb[N];
          pair_at(i, gm, nb);
#pragma unroll
          for (int j = 0; j < N; ++j) {
            const float d = to_f32(dyp[i].v[j]);
            sum_g = fmaf(d, gm[j], sum_g);
            sum_gx = fmaf(d, to_f32(xp[i].v[j]) + nb[j], sum_gx);
          }
          continue;
        }
        float gm[N], sc[N], sh[N];
        column_at(gamma_f, i, gm);
        xhat_coefs(i, rs, shift, sc, sh);
#pragma unroll
        for (int j = 0; j < N; ++j) {
          // Zero-filled tail elements: d = 0 (and xhat = 0 from the output): they add nothing.
          const float g = to_f32(dyp[i].v[j]) * gm[j];
          sum_g += g;
          sum_gx = fmaf(g, fmaf(to_f32(xp[i].v[j]), sc[j], sh[j]), sum_gx);
        }
      }
    }
    sum_g = warp_sum(sum_g);
    sum_gx = warp_sum(sum_gx);
    if (TEAM > 1) {
      // One exchange per row. Double buffering by parity: a warp rewrites a slot two rows
      // later, after the team's barrier of the row in between, by which time every reader of
      // the slot is done.
      if (lane == 0) {
        row_sums[parity][warp][0] = sum_g;
        row_sums[parity][warp][1] = sum_gx;
      }
      // Named barrier of the team's warps only (id 0 is __syncthreads').
      asm volatile("bar.sync %0, %1;" ::"r"(team + 1), "r"(kTeamThreads) : "memory");
      sum_g = sum_gx = 0.f;
#pragma unroll
      for (int m = 0; m < TEAM; ++m) {
        sum_g += row_sums[parity][team * TEAM + m][0];
        sum_gx += row_sums[parity][team * TEAM + m][1];
      }
    }
    if (!active) continue;
    // dx = rs * (d * gamma - mean_g - xhat * mean_gx) = rs * d * gamma + (xhat * a + b).
    const float shift = -mu * rs;
    const float a = -rs * sum_gx * inv_cols, b = -rs * sum_g * inv_cols;
    // The residual gradient: all P packs in flight together once the row sums are done. Loaded
    // with dy and x they would be live across the reductions (measured 15% slower at 8192 x
    // 1024 fp16); loaded one pack at a time in the loop below, each load's latency was waited
    // for in turn, a third of the kernel's stall samples at 8192 x 1024 (two calls of an
    // encoder layer 0.066 -> 0.059-0.062 ms; 65536 x 1024 +resid 82% -> 86% of copy from the
    // input, 77% -> 81% from the output).
    PackN<T, N> rp[P];
    if (d_residual != nullptr) {
#pragma unroll
      for (int i = 0; i < P; ++i)
        if (col(i) < cols) load_pack<T, N>(d_residual + row * cols, col(i), cols, vec, rp[i]);
    }
#pragma unroll
    for (int i = 0; i < P; ++i) {
      const int64_t c = col(i);
      if (c >= cols) continue;
      if (sizeof(T) < 4) {
        launder(dyp[i]);
        launder(xp[i]);
      }
      float out[N];
      if (d_residual != nullptr) {
#pragma unroll
        for (int j = 0; j < N; ++j) out[j] = to_f32(rp[i].v[j]);
      } else {
#pragma unroll
        for (int j = 0; j < N; ++j) out[j] = 0.f;
      }
      float gm[N], sc[N], sh[N], dg[N], db[N];
      if (kPacked) {  // xhat = (y - beta) * (1 / gamma)
        pair_at(i, gm, sh);
        column_at(inv_gamma_f, i, sc);
      } else {
        column_at(gamma_f, i, gm);
        xhat_coefs(i, rs, shift, sc, sh);
      }
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float d = to_f32(dyp[i].v[j]);
        const float xhat =
            kPacked ? (to_f32(xp[i].v[j]) + sh[j]) * sc[j] : fmaf(to_f32(xp[i].v[j]), sc[j], sh[j]);
        out[j] += fmaf(rs * d, gm[j], fmaf(xhat, a, b));
        dg[j] = d * xhat;
        db[j] = d;
      }
      if (vec) {
        store_n<N, true>(dx + row * cols, c, cols, out);
      } else {
        store_n<N, false>(dx + row * cols, c, cols, out);
      }
      if (WRITE_Y) {  // the forward's output, from the same x, mean and rstd
        float bt[N], yv[N];
        column_at(beta_f, i, bt);
#pragma unroll
        for (int j = 0; j < N; ++j) yv[j] = ln_output(to_f32(xp[i].v[j]), mu, rs, gm[j], bt[j]);
        if (vec) {
          store_n<N, true>(y_out + row * cols, c, cols, yv);
        } else {
          store_n<N, false>(y_out + row * cols, c, cols, yv);
        }
      }
#pragma unroll
      for (int q = 0; q < Q; ++q) {
        float4& pg = partials[((0 * P + i) * Q + q) * kThreads + threadIdx.x];
        float4& pb = partials[((1 * P + i) * Q + q) * kThreads + threadIdx.x];
        float4 g4 = pg, b4 = pb;
        g4.x += dg[4 * q];
        g4.y += dg[4 * q + 1];
        g4.z += dg[4 * q + 2];
        g4.w += dg[4 * q + 3];
        b4.x += db[4 * q];
        b4.y += db[4 * q + 1];
        b4.z += db[4 * q + 2];
        b4.w += db[4 * q + 3];
        pg = g4;
        pb = b4;
      }
    }
  }

  // Column c is owned, in every team, by thread t = (c / N) % kTeamThreads, pack
  // i = c / kStride, element j = c % N; sum it over the block's teams (in team order), then
  // either one global atomicAdd per column per block, or (sums.rows, deterministic mode) a
  // store into the block's rows of sums.rows: [2][gridDim.x][cols], d_gamma's then d_beta's,
  // which the grid's last blocks add in a fixed order (partial_sums.cuh).
  __syncthreads();
  const float* flat = reinterpret_cast<const float*>(partials);
  // Four columns per atomic_add4 (one 16-byte atomic on sm_90: ncu put a quarter of the
  // kernel's stall samples at 8192 x 1024 on one scalar atomic per column). Columns c..c+3
  // (c % 4 == 0) are consecutive floats in every team's float4 layout.
  if (sums.rows == nullptr && cols % 4 == 0 && pack_aligned<float>(d_gamma) &&
      pack_aligned<float>(d_beta)) {
    for (int64_t c = 4 * int64_t(threadIdx.x); c < cols; c += 4 * kThreads) {
      const int i = int(c / kStride), tt = int((c / N) % kTeamThreads), j = int(c % N);
      float4 sg = make_float4(0.f, 0.f, 0.f, 0.f), sb = sg;
#pragma unroll
      for (int m = 0; m < kTeams; ++m) {
        const int thread = m * kTeamThreads + tt;
        const float4 g = *reinterpret_cast<const float4*>(
            &flat[(((0 * P + i) * Q + j / 4) * kThreads + thread) * 4]);
        const float4 b = *reinterpret_cast<const float4*>(
            &flat[(((1 * P + i) * Q + j / 4) * kThreads + thread) * 4]);
        sg.x += g.x, sg.y += g.y, sg.z += g.z, sg.w += g.w;
        sb.x += b.x, sb.y += b.y, sb.z += b.z, sb.w += b.w;
      }
      atomic_add4(d_gamma + c, sg);
      atomic_add4(d_beta + c, sb);
    }
    return;
  }
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
    const int i = int(c / kStride), tt = int((c / N) % kTeamThreads), j = int(c % N);
    float sg = 0.f, sb = 0.f;
#pragma unroll
    for (int m = 0; m < kTeams; ++m) {
      const int thread = m * kTeamThreads + tt;
      sg += flat[(((0 * P + i) * Q + j / 4) * kThreads + thread) * 4 + j % 4];
      sb += flat[(((1 * P + i) * Q + j / 4) * kThreads + thread) * 4 + j % 4];
    }
    if (sums.rows != nullptr) {
      sums.rows[int64_t(blockIdx.x) * cols + c] = sg;
      sums.rows[(int64_t(gridDim.x) + blockIdx.x) * cols + c] = sb;
    } else {
      atomicAdd(d_gamma + c, sg);
      atomicAdd(d_beta + c, sb);
    }
  }
  if (sums.rows != nullptr) finish_partial_sums(sums, reinterpret_cast<float*>(shared_f4));
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

// Calls f(TEAM, P) (integral constants) for the register path of cols columns in N-element
// packs: the fewest warps per row (TEAM = 1, 2, 4, 8) that hold the row with at most
// kLnBwdMaxPacks packs per thread, then the fewest packs per thread (P = 1, 2, 4).
template <int N, class F>
void with_register_layout(int64_t cols, F&& f) {
  using std::integral_constant;
  auto packs = [&](auto team) {
    constexpr int TEAM = decltype(team)::value;
    const int64_t per_pass = int64_t(32) * TEAM * N;
    if (cols <= per_pass)
      f(team, integral_constant<int, 1>{});
    else if (cols <= 2 * per_pass)
      f(team, integral_constant<int, 2>{});
    else
      f(team, integral_constant<int, kLnBwdMaxPacks>{});
  };
  const int64_t per_warp = int64_t(32) * kLnBwdMaxPacks * N;
  if (cols <= per_warp)
    packs(integral_constant<int, 1>{});
  else if (cols <= 2 * per_warp)
    packs(integral_constant<int, 2>{});
  else if (cols <= 4 * per_warp)
    packs(integral_constant<int, 4>{});
  else
    packs(integral_constant<int, 8>{});
}

}  // namespace

void launch_layernorm_forward(const void* x, const void* gamma, const void* beta, void* y,
                              float* mean, float* rstd, int64_t rows, int64_t cols, float eps,
                              DType dt, cudaStream_t s) {
  if (rows == 0) return;
  constexpr int kWarps = 4;
  unsigned grid = unsigned((rows + kWarps - 1) / kWarps);
  dispatch_dtype(dt, "layernorm_forward", [&](auto tv) {
    using T = decltype(tv);
    const bool vec = can_vectorise<T>(cols, {x, gamma, beta, y});
    auto registers = [&](auto packs) {
      constexpr int P = decltype(packs)::value;
      launch_kernel("layernorm_forward", layernorm_forward_register_kernel<T, P>, grid, 32 * kWarps,
                    0, s, static_cast<const T*>(x), static_cast<const T*>(gamma),
                    static_cast<const T*>(beta), static_cast<T*>(y), mean, rstd, rows, cols, eps);
    };
    if (vec && with_row_packs<T>(cols, registers)) return;
    if (vec)
      launch_kernel("layernorm_forward", layernorm_forward_kernel<T, true>, grid, 32 * kWarps, 0, s,
                    static_cast<const T*>(x), static_cast<const T*>(gamma),
                    static_cast<const T*>(beta), static_cast<T*>(y), mean, rstd, rows, cols, eps);
    else
      launch_kernel("layernorm_forward", layernorm_forward_kernel<T, false>, grid, 32 * kWarps, 0,
                    s, static_cast<const T*>(x), static_cast<const T*>(gamma),
                    static_cast<const T*>(beta), static_cast<T*>(y), mean, rstd, rows, cols, eps);
  });
}

namespace {

// The register path of the backward: returns its grid size (the number of per-block column
// partials), 0 when cols is too long for it (or, from the output, when its shared memory is more
// than the device gives a block). Launches only when `launch`; sums as in the kernel (rows null:
// atomics into d_gamma / d_beta). WRITE_Y: also src.y = LN(x) (from the input).
template <bool FROM_OUTPUT, bool WRITE_Y>
int64_t layernorm_backward_register_path(const void* dy, const LnXhatSource& src, const void* gamma,
                                         const float* rstd, const void* d_residual, void* dx,
                                         float* d_gamma, float* d_beta, const PartialSums& sums,
                                         int64_t rows, int64_t cols, DType dt, bool launch,
                                         cudaStream_t s) {
  int64_t grid = 0;
  dispatch_dtype(dt, "layernorm_backward", [&](auto tv) {
    using T = decltype(tv);
    constexpr int N = int(16 / sizeof(T));
    if (cols > ln_bwd_register_max_cols<T>()) return;
    bool vec = cols % N == 0;
    for (const void* p : {dy, src.xy, gamma, d_residual, static_cast<const void*>(dx),
                          static_cast<const void*>(src.y)})
      if (p != nullptr && reinterpret_cast<uintptr_t>(p) % 16 != 0) vec = false;
    with_register_layout<N>(cols, [&](auto team, auto packs) {
      constexpr int TEAM = decltype(team)::value, P = decltype(packs)::value;
      constexpr auto kernel = layernorm_backward_register_kernel<T, TEAM, P, FROM_OUTPUT, WRITE_Y>;
      // <= 96 KiB from the input (128 KiB writing y), <= 160 KiB from the output.
      constexpr size_t kSharedBytes = ln_bwd_shared_bytes<T, TEAM, P, FROM_OUTPUT, WRITE_Y>();
      // The grid: the blocks that fit on the device at once (the grid stride covers the rest);
      // 0: more shared memory than a block may have here (from the output with 8 warps per row
      // on devices of 99 KiB per block, such as sm_86 / sm_89): such rows take the fallback.
      static int per_sm = [&] {
        cudaFuncAttributes attr{};
        LS_CUDA_CALL(cudaFuncGetAttributes(&attr, kernel));
        if (attr.sharedSizeBytes + kSharedBytes >
            size_t(device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>()))
          return 0;
        int n = 0;
        LS_CUDA_CALL(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          int(kSharedBytes)));
        LS_CUDA_CALL(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
            &n, kernel, 32 * ln_bwd_block_warps(TEAM), kSharedBytes));
        return n > 0 ? n : 1;
      }();
      if (per_sm == 0) return;
      constexpr int kTeams = ln_bwd_block_warps(TEAM) / TEAM;
      // At least kMinRowSteps rows per team: a block's fixed costs (gamma into shared memory,
      // zeroing and writing out its column sums, and in deterministic mode its partial rows)
      // dominate when each block sees only a row or two (8192 x 1024 fp16 ran at ~37% of
      // copy bandwidth with one block per 4 rows against ~90% for 65536 rows).
      // (Measured again at 8192 x 1024 fp16: 1, 2 and 4 rows per team within 5% of each
      // other, 8 rows 40% slower.)
      constexpr int64_t kMinRowSteps = 4;
      grid = (rows + kTeams * kMinRowSteps - 1) / (kTeams * kMinRowSteps);
      const int64_t cap = int64_t(device_sm_count()) * per_sm;
      if (grid > cap) grid = cap;
      if (!launch) return;
      // Allow the shared memory (always: with the static row-sum buffer, exactly 48 KiB of
      // dynamic memory is already over the default), once per device (a launch inside a CUDA
      // graph capture then makes no attribute call).
      allow_dynamic_smem<kernel>(kSharedBytes);
      launch_kernel("layernorm_backward", kernel, unsigned(grid), 32 * ln_bwd_block_warps(TEAM),
                    kSharedBytes, s, static_cast<const T*>(dy), static_cast<const T*>(src.xy),
                    static_cast<const T*>(gamma), src.mean, static_cast<const T*>(src.beta), rstd,
                    static_cast<const T*>(d_residual), static_cast<T*>(dx), static_cast<T*>(src.y),
                    d_gamma, d_beta, sums, rows, cols, vec);
    });
  });
  return grid;
}

int64_t layernorm_backward_register_path(const void* dy, const LnXhatSource& src, const void* gamma,
                                         const float* rstd, const void* d_residual, void* dx,
                                         float* d_gamma, float* d_beta, const PartialSums& sums,
                                         int64_t rows, int64_t cols, DType dt, bool launch,
                                         cudaStream_t s) {
  auto path = src.from_output ? layernorm_backward_register_path<true, false>
              : src.y         ? layernorm_backward_register_path<false, true>
                              : layernorm_backward_register_path<false, false>;
  return path(dy, src, gamma, rstd, d_residual, dx, d_gamma, d_beta, sums, rows, cols, dt, launch,
              s);
}

// Rows too long for the registers: the two-pass fallback.
template <bool FROM_OUTPUT>
void layernorm_backward_fallback(const void* dy, const LnXhatSource& src, const void* gamma,
                                 const float* rstd, const void* d_residual, void* dx,
                                 float* d_gamma, float* d_beta, int64_t rows, int64_t cols,
                                 DType dt, cudaStream_t s) {
  constexpr int kWarps = 8;
  size_t shared_bytes = size_t(2 * cols) * sizeof(float);
  bool shared = shared_bytes <= kMaxSharedPartialBytes;
  int64_t blocks = (rows + kWarps - 1) / kWarps;
  int64_t cap = int64_t(device_sm_count()) * 8;  // up to 64 warps per SM
  if (blocks > cap) blocks = cap;
  dispatch_dtype(dt, "layernorm_backward", [&](auto tv) {
    using T = decltype(tv);
    bool vec = can_vectorise<T>(cols, {dy, src.xy, gamma, src.beta, d_residual, dx});
    auto launch = [&](auto kernel) {
      size_t bytes = shared ? shared_bytes : 0;
      if (bytes > 48 * 1024)
        LS_CUDA_CALL(
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
      launch_kernel("layernorm_backward", kernel, unsigned(blocks), 32 * kWarps, bytes, s,
                    static_cast<const T*>(dy), static_cast<const T*>(src.xy),
                    static_cast<const T*>(gamma), src.mean, static_cast<const T*>(src.beta), rstd,
                    static_cast<const T*>(d_residual), static_cast<T*>(dx), d_gamma, d_beta, rows,
                    cols);
    };
    if (vec && shared)
      launch(layernorm_backward_kernel<T, true, true, FROM_OUTPUT>);
    else if (vec)
      launch(layernorm_backward_kernel<T, true, false, FROM_OUTPUT>);
    else if (shared)
      launch(layernorm_backward_kernel<T, false, true, FROM_OUTPUT>);
    else
      launch(layernorm_backward_kernel<T, false, false, FROM_OUTPUT>);
    if (!shared) {
      dim3 block(32, 8);
      unsigned gx = unsigned((cols + 31) / 32);
      int64_t gy = int64_t(device_sm_count()) * 8 / gx;
      if (gy < 1) gy = 1;
      if (gy > (rows + 7) / 8) gy = (rows + 7) / 8;
      if (gy > 65535) gy = 65535;
      launch_kernel("layernorm_backward (parameter gradients)",
                    layernorm_param_grad_kernel<T, FROM_OUTPUT>, dim3(gx, unsigned(gy)), block, 0,
                    s, static_cast<const T*>(dy), static_cast<const T*>(src.xy),
                    static_cast<const T*>(gamma), src.mean, static_cast<const T*>(src.beta), rstd,
                    d_gamma, d_beta, rows, cols);
    }
  });
}

// src.y = the forward's output from src.xy = x, src.mean, rstd, gamma and src.beta (the same bits
// as the forward): the recomputed output where the backward's register path does not apply.
void launch_layernorm_output(const LnXhatSource& src, const void* gamma, const float* rstd,
                             int64_t rows, int64_t cols, DType dt, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  constexpr int kWarps = 4;
  const unsigned grid = unsigned((rows + kWarps - 1) / kWarps);
  dispatch_dtype(dt, "layernorm_output", [&](auto tv) {
    using T = decltype(tv);
    auto launch = [&](auto kernel) {
      launch_kernel("layernorm_output", kernel, grid, 32 * kWarps, 0, s,
                    static_cast<const T*>(src.xy), static_cast<const T*>(gamma),
                    static_cast<const T*>(src.beta), src.mean, rstd, static_cast<T*>(src.y), rows,
                    cols);
    };
    if (can_vectorise<T>(cols, {src.xy, gamma, src.beta, src.y}))
      launch(layernorm_output_kernel<T, true>);
    else
      launch(layernorm_output_kernel<T, false>);
  });
}

}  // namespace

int64_t layernorm_backward_partial_groups(int64_t rows, int64_t cols, DType dt,
                                          const LnXhatSource& src) {
  if (rows == 0 || cols == 0) return 0;
  // Alignment does not change the grid: the pointers are not read.
  return layernorm_backward_register_path(nullptr, src, nullptr, nullptr, nullptr, nullptr, nullptr,
                                          nullptr, PartialSums{}, rows, cols, dt, false, nullptr);
}

void launch_layernorm_backward_partials(const void* dy, const LnXhatSource& src, const void* gamma,
                                        const float* rstd, const void* d_residual, void* dx,
                                        const PartialSums& sums, int64_t rows, int64_t cols,
                                        DType dt, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  LS_REQUIRE(layernorm_backward_register_path(dy, src, gamma, rstd, d_residual, dx, nullptr,
                                              nullptr, sums, rows, cols, dt, true, s) > 0,
             LS_ERR_UNSUPPORTED,
             "layernorm_backward: per-block partials need cols <= 8192 (fp16/bf16) or 4096 "
             "(fp32), got "
                 << cols);
}

void launch_layernorm_backward(const void* dy, const LnXhatSource& src, const void* gamma,
                               const float* rstd, const void* d_residual, void* dx, float* d_gamma,
                               float* d_beta, int64_t rows, int64_t cols, DType dt,
                               cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  if (layernorm_backward_register_path(dy, src, gamma, rstd, d_residual, dx, d_gamma, d_beta,
                                       PartialSums{}, rows, cols, dt, true, s) > 0)
    return;
  auto fallback =
      src.from_output ? layernorm_backward_fallback<true> : layernorm_backward_fallback<false>;
  fallback(dy, src, gamma, rstd, d_residual, dx, d_gamma, d_beta, rows, cols, dt, s);
  if (src.y != nullptr) launch_layernorm_output(src, gamma, rstd, rows, cols, dt, s);
}

}  // namespace cuda
}  // namespace ls
