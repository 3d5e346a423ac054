// Masked softmax over attention scores and its backward fused with the attention dropout's
// backward. Rows: r = (b*H + h)*Lq + q over [B, H, Lq, Lk]; key k of row r is visible unless
// key_pad[b*Lk + k] != 0 or (causal and k > q). Invisible keys get probability 0; a row with no
// visible key is all zeros. Statistics (max, sum of exponentials, dot products) in fp32.
// Two paths, no cap on Lk:
//   - register path (Lk <= 8192): a team of TPR threads per row (a power of two, 4 .. 256)
//     holds the row in registers, so it is read once and written once. Thread t of the team
//     owns the packs of N = 16 / sizeof(T) keys starting at (t + TPR * i) * N, i < P, with at
//     most 32 keys per thread (P * N <= 32): Lk <= 32 N: TPR = 4 .. 32 and P = 1 (a warp holds
//     32 / TPR rows); Lk <= 1024: one warp, P = 2 .. 32 / N; longer: TPR = 64 .. 256 warps'
//     worth of threads with P = 32 / N, one row per block. 16-byte loads and stores when
//     Lk % N == 0 and the pointers are aligned, else element access with bounds. Reductions:
//     shuffles within the team (TPR <= 32), block reductions through shared memory (TPR > 32).
//     Blocks: 128 threads (TPR <= 32) or TPR threads. The forward issues all of a thread's
//     16-byte loads before it converts and masks them, and works in base 2 (scores
//     scaled by log2(e), then exp2), takes the mask per row (32-bit row arithmetic; the
//     per-key tests are skipped for unmasked rows) and does not read the keys a causal row
//     cannot see.
//   - long rows (Lk > 8192): one block of 512 threads per row, two passes over global memory:
//     pass 1 keeps a per-thread online (max, sum-exp) and merges them over the block, pass 2
//     re-reads (from L2) and writes. Backward likewise (pass 1: the dot product).
// Backward: d_scores = P * (dP - sum_k dP P), dP = dropout_bwd(d_dropped); the dropout mask is
// regenerated with Philox from the key and the flat index r*Lk + k: on the register path with
// 16-byte packs of 8 keys (fp16/bf16, Lk % 8 == 0) one Philox call per pack (its 8 lanes,
// philox.h), otherwise one dropout_factors4 call per 4 keys (one Philox call when r*Lk + k is
// a multiple of 4: 4 of its 8 lanes).
// probs may alias scores, d_scores may alias d_dropped: each element is read by the thread
// that later writes it, before it writes it.
#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

constexpr int kLongThreads = 512;
constexpr int kTeamBlockThreads = 128;  // block size when a row team is at most a warp
constexpr int kMaxLaneKeys = 32;        // keys per thread on the register path
constexpr int kMaxTeam = 256;
constexpr int64_t kRegisterMaxLk = int64_t(kMaxTeam) * kMaxLaneKeys;  // 8192

struct RowMask {
  const uint8_t* key_pad;  // null or [B, Lk]
  bool causal;
  int64_t heads, len_q, len_k;
  // Visibility of key k for row r.
  __device__ __forceinline__ bool visible(int64_t r, int64_t k) const {
    if (k >= len_k) return false;
    int64_t q = r % len_q;
    if (causal && k > q) return false;
    if (key_pad != nullptr) {
      int64_t b = r / (heads * len_q);
      if (key_pad[b * len_k + k] != 0) return false;
    }
    return true;
  }
};

template <class T, int N>
struct alignas(16) PackN {
  T v[N];
};

// Keys [c, c + N) of a row (n <= 8192 keys) as fp32; keys at or beyond n read as `fill`.
// vec: one 16-byte access.
template <class T, int N>
__device__ __forceinline__ void load_keys(const T* row, int c, int n, bool vec, float fill,
                                          float out[N]) {
  if (vec) {
    PackN<T, N> p = *reinterpret_cast<const PackN<T, N>*>(row + c);
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = to_f32(p.v[j]);
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = c + j < n ? to_f32(row[c + j]) : fill;
  }
}
template <class T, int N>
__device__ __forceinline__ void store_keys(T* row, int c, int n, bool vec, const float in[N]) {
  if (vec) {
    PackN<T, N> p;
#pragma unroll
    for (int j = 0; j < N; ++j) p.v[j] = from_f32<T>(in[j]);
    *reinterpret_cast<PackN<T, N>*>(row + c) = p;
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j)
      if (c + j < n) row[c + j] = from_f32<T>(in[j]);
  }
}

// Reductions over a row team of TPR threads (all threads of the block call them: rows past the
// end take part with neutral values). TPR <= 32: shuffles within aligned groups of TPR lanes;
// TPR > 32: the team is the block (scratch: 33 floats of shared memory).
template <int TPR>
__device__ __forceinline__ float team_max(float v, float* scratch) {
  if constexpr (TPR > 32) {
    return block_max(v, scratch);
  } else {
#pragma unroll
    for (int o = TPR / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
  }
}
template <int TPR>
__device__ __forceinline__ float team_sum(float v, float* scratch) {
  if constexpr (TPR > 32) {
    return block_sum(v, scratch);
  } else {
#pragma unroll
    for (int o = TPR / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
  }
}

template <int TPR>
constexpr int block_threads() {
  return TPR > 32 ? TPR : kTeamBlockThreads;
}

// Register path, forward. vec: Lk % N == 0 and scores, probs 16-byte aligned; pad_vec: also
// key_pad aligned to N bytes (the N pad bytes of a pack are read in one access).
template <class T, int TPR, int P>
__global__ void __launch_bounds__(block_threads<TPR>())
    softmax_forward_register_kernel(const T* scores, T* probs, RowMask mask, int64_t rows, bool vec,
                                    bool pad_vec) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  constexpr int N = int(16 / sizeof(T));
  constexpr int kRowsPerBlock = block_threads<TPR>() / TPR;
  __shared__ float scratch[33];
  const int t = threadIdx.x % TPR;
  const int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / TPR;
  const bool active = r < rows;
  const int lk = int(mask.len_k);  // <= kRegisterMaxLk on this path
  // Keys k < limit pass the causal mask; masked: some key of the row may be invisible.
  int limit = lk;
  const uint8_t* pad_row = nullptr;
  if (active) {
    // 32-bit division: rows <= INT32_MAX (checked by CudaOps).
    if (mask.causal) {
      const uint32_t q = uint32_t(r) % uint32_t(mask.len_q);
      if (q + 1 < uint32_t(lk)) limit = int(q + 1);
    }
    if (mask.key_pad != nullptr)
      pad_row = mask.key_pad + int64_t(uint32_t(r) / uint32_t(mask.heads * mask.len_q)) * lk;
  }
  const bool masked = limit < lk || pad_row != nullptr;
  const T* in = scores + r * lk;
  // v holds scores * log2(e), so that exp(s - max) = exp2(v - max(v)).
  constexpr float kLog2e = 1.4426950408889634f;
  float v[P][N];
  float mx = -INFINITY;
  // All of the thread's 16-byte loads are issued before the first is used: loaded pack by pack
  // inside the masking loop below, each waited for in turn (ncu at 16384 x 4096 fp16: 55% of the
  // stall samples on the first use of each of the 4 packs, 65% of DRAM bandwidth).
  PackN<T, N> raw[P];
  if (vec) {
#pragma unroll
    for (int i = 0; i < P; ++i) {
      const int c = (t + TPR * i) * N;
      if (active && c < limit) raw[i] = *reinterpret_cast<const PackN<T, N>*>(in + c);
    }
  }
#pragma unroll
  for (int i = 0; i < P; ++i) {
    const int c = (t + TPR * i) * N;
    // Keys at or past `limit` (causal) are never read: their probabilities are 0.
    if (active && c < limit) {
      if (vec) {
#pragma unroll
        for (int j = 0; j < N; ++j) v[i][j] = to_f32(raw[i].v[j]);
      } else {
        load_keys<T, N>(in, c, lk, false, -INFINITY, v[i]);
      }
      if (masked) {
        // Per-key tests only for packs that reach the causal limit or hold a padded key.
        uint8_t pad[N] = {};
        bool any = c + N > limit;
        if (pad_row != nullptr) {
          if (pad_vec) {  // the N = 8 or 4 pad bytes of the pack in one access
            if (N == 8) {
              const uint2 w = *reinterpret_cast<const uint2*>(pad_row + c);
              if ((w.x | w.y) != 0) {
                any = true;
#pragma unroll
                for (int j = 0; j < N; ++j)
                  pad[j] = uint8_t(((j < 4 ? w.x : w.y) >> (8 * (j & 3))) & 0xff);
              }
            } else {
              const uint32_t w = *reinterpret_cast<const uint32_t*>(pad_row + c);
              if (w != 0) {
                any = true;
#pragma unroll
                for (int j = 0; j < N; ++j) pad[j] = uint8_t((w >> (8 * (j & 3))) & 0xff);
              }
            }
          } else {
            any = true;
#pragma unroll
            for (int j = 0; j < N; ++j) pad[j] = c + j < lk ? pad_row[c + j] : 1;
          }
        }
        if (any) {
#pragma unroll
          for (int j = 0; j < N; ++j)
            if (c + j >= limit || pad[j] != 0) v[i][j] = -INFINITY;
        }
      }
#pragma unroll
      for (int j = 0; j < N; ++j) {
        v[i][j] *= kLog2e;
        mx = fmaxf(mx, v[i][j]);
      }
    } else {
#pragma unroll
      for (int j = 0; j < N; ++j) v[i][j] = -INFINITY;
    }
  }
  float scale;  // probability = v * scale after the exponentials below
  if constexpr (TPR > 32) {
    // One block reduction of (max, sum of exp2(v - max)) pairs instead of a max and then a sum:
    // half the barriers. Each thread first takes exp2 against its own max.
    const float own = mx == -INFINITY ? 0.f : mx;
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < P; ++i)
#pragma unroll
      for (int j = 0; j < N; ++j) {
        v[i][j] = exp2f(v[i][j] - own);
        sum += v[i][j];
      }
    float m = mx, sm = sum;
    auto merge = [](float& m1, float& s1, float m2, float s2) {
      const float mm = fmaxf(m1, m2);
      s1 = mm == -INFINITY ? 0.f : s1 * exp2f(m1 - mm) + s2 * exp2f(m2 - mm);
      m1 = mm;
    };
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
      merge(m, sm, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, sm, o));
    __shared__ float2 warp_pairs[TPR / 32];
    if ((threadIdx.x & 31) == 0) warp_pairs[threadIdx.x / 32] = make_float2(m, sm);
    __syncthreads();
    m = warp_pairs[0].x;
    sm = warp_pairs[0].y;
#pragma unroll
    for (int w = 1; w < TPR / 32; ++w) merge(m, sm, warp_pairs[w].x, warp_pairs[w].y);
    // own <= m, so exp2(own - m) <= 1. A thread that saw no visible key (its v are all 0)
    // gets 0 rather than exp2(0 - m), which overflows for m < -128; no visible key in the
    // row at all: sm = 0.
    scale = sm > 0.f && mx != -INFINITY ? exp2f(own - m) / sm : 0.f;
  } else {
    mx = team_max<TPR>(mx, scratch);
    if (mx == -INFINITY) mx = 0.f;  // no visible key: every exp2 below is exp2(-inf) = 0
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < P; ++i)
#pragma unroll
      for (int j = 0; j < N; ++j) {
        v[i][j] = exp2f(v[i][j] - mx);
        sum += v[i][j];
      }
    sum = team_sum<TPR>(sum, scratch);
    scale = sum > 0.f ? 1.f / sum : 0.f;
  }
  if (!active) return;
  T* out = probs + r * lk;
#pragma unroll
  for (int i = 0; i < P; ++i) {
    const int c = (t + TPR * i) * N;
    if (c >= lk) break;
#pragma unroll
    for (int j = 0; j < N; ++j) v[i][j] *= scale;
    store_keys<T, N>(out, c, lk, vec, v[i]);
  }
}

// Register path, backward. vec: Lk % N == 0 and the three pointers 16-byte aligned.
template <class T, int TPR, int P>
__global__ void __launch_bounds__(block_threads<TPR>())
    softmax_backward_register_kernel(const T* d_dropped, const T* probs, T* d_scores, int64_t rows,
                                     int lk, DropoutParams d, bool vec) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  constexpr int N = int(16 / sizeof(T));
  constexpr int kRowsPerBlock = block_threads<TPR>() / TPR;
  __shared__ float scratch[33];
  const int t = threadIdx.x % TPR;
  const int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / TPR;
  const bool active = r < rows;
  const T* g_row = d_dropped + r * lk;
  const T* p_row = probs + r * lk;
  float dp[P][N];
  PackN<T, N> pk[P];  // probabilities, kept in the storage type
  // All loads first, then the dropout masks (Philox) while nothing else is waited for.
#pragma unroll
  for (int i = 0; i < P; ++i) {
    const int c = (t + TPR * i) * N;
    if (active && c < lk) {
      load_keys<T, N>(g_row, c, lk, vec, 0.f, dp[i]);
      if (vec) {
        pk[i] = *reinterpret_cast<const PackN<T, N>*>(p_row + c);
      } else {
#pragma unroll
        for (int j = 0; j < N; ++j) pk[i].v[j] = c + j < lk ? p_row[c + j] : from_f32<T>(0.f);
      }
    } else {
#pragma unroll
      for (int j = 0; j < N; ++j) {
        dp[i][j] = 0.f;
        pk[i].v[j] = from_f32<T>(0.f);
      }
    }
  }
  float dot = 0.f;
  const uint64_t offset = dropout_offset(d.key);
#pragma unroll
  for (int i = 0; i < P; ++i) {
    const int c = (t + TPR * i) * N;
    if (N == 8 && vec && d.active && active && c < lk) {
      // r * lk + c is a multiple of 8 (lk % 8 == 0): all 8 lanes of one Philox call.
      float f[8];
      dropout_factors8_aligned(d, offset, uint64_t(r * lk + c), f);
#pragma unroll
      for (int j = 0; j < N; ++j) dp[i][j] *= f[j];
    } else if (d.active && active && c < lk) {
#pragma unroll
      for (int h = 0; h < N / 4; ++h) {
        float f[4] = {0.f, 0.f, 0.f, 0.f};
        if (c + 4 * h < lk) dropout_factors4(d, uint64_t(r * lk + c + 4 * h), f);
#pragma unroll
        for (int j = 0; j < 4; ++j) dp[i][4 * h + j] *= f[j];
      }
    }
#pragma unroll
    for (int j = 0; j < N; ++j) dot += dp[i][j] * to_f32(pk[i].v[j]);
  }
  dot = team_sum<TPR>(dot, scratch);
  if (!active) return;
  T* out = d_scores + r * lk;
#pragma unroll
  for (int i = 0; i < P; ++i) {
    const int c = (t + TPR * i) * N;
    if (c >= lk) break;
#pragma unroll
    for (int j = 0; j < N; ++j) dp[i][j] = to_f32(pk[i].v[j]) * (dp[i][j] - dot);
    store_keys<T, N>(out, c, lk, vec, dp[i]);
  }
}

template <class T>
__global__ void softmax_forward_block_kernel(const T* scores, T* probs, RowMask mask) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  __shared__ float scratch[33];
  int64_t r = blockIdx.x;
  int64_t lk = mask.len_k;
  const T* in = scores + r * lk;
  T* out = probs + r * lk;
  bool aligned = lk % 4 == 0 && pack_aligned<T>(scores) && pack_aligned<T>(probs);
  float m = -INFINITY, s = 0.f;  // online max and sum of exp(x - m) over this thread's keys
  for (int64_t k0 = 4 * int64_t(threadIdx.x); k0 < lk; k0 += 4 * int64_t(blockDim.x)) {
    float v[4];
    load4(in, k0, lk, aligned && k0 + 4 <= lk, v);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (!mask.visible(r, k0 + j)) continue;
      if (v[j] > m) {
        s = s * expf(m - v[j]) + 1.f;
        m = v[j];
      } else {
        s += expf(v[j] - m);
      }
    }
  }
  float mx = block_max(m, scratch);
  float sum = block_sum(m == -INFINITY ? 0.f : s * expf(m - mx), scratch);
  float inv = sum > 0.f ? 1.f / sum : 0.f;
  for (int64_t k0 = 4 * int64_t(threadIdx.x); k0 < lk; k0 += 4 * int64_t(blockDim.x)) {
    bool vec = aligned && k0 + 4 <= lk;
    float v[4];
    load4(in, k0, lk, vec, v);
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = mask.visible(r, k0 + j) ? expf(v[j] - mx) * inv : 0.f;
    store4(out, k0, lk, vec, v);
  }
}

template <class T>
__global__ void softmax_backward_block_kernel(const T* d_dropped, const T* probs, T* d_scores,
                                              int64_t lk, DropoutParams d) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  __shared__ float scratch[33];
  int64_t r = blockIdx.x;
  bool aligned = lk % 4 == 0 && pack_aligned<T>(d_dropped) && pack_aligned<T>(probs) &&
                 pack_aligned<T>(d_scores);
  float dot = 0.f;
  for (int64_t k0 = 4 * int64_t(threadIdx.x); k0 < lk; k0 += 4 * int64_t(blockDim.x)) {
    bool vec = aligned && k0 + 4 <= lk;
    float g[4], p[4], f[4];
    load4(d_dropped + r * lk, k0, lk, vec, g);
    load4(probs + r * lk, k0, lk, vec, p);
    dropout_factors4(d, uint64_t(r * lk + k0), f);
#pragma unroll
    for (int j = 0; j < 4; ++j) dot += g[j] * f[j] * p[j];
  }
  dot = block_sum(dot, scratch);
  for (int64_t k0 = 4 * int64_t(threadIdx.x); k0 < lk; k0 += 4 * int64_t(blockDim.x)) {
    bool vec = aligned && k0 + 4 <= lk;
    float g[4], p[4], f[4];
    load4(d_dropped + r * lk, k0, lk, vec, g);
    load4(probs + r * lk, k0, lk, vec, p);
    dropout_factors4(d, uint64_t(r * lk + k0), f);
#pragma unroll
    for (int j = 0; j < 4; ++j) g[j] = p[j] * (g[j] * f[j] - dot);
    store4(d_scores + r * lk, k0, lk, vec, g);
  }
}

// Calls f(TPR, P) (integral constants) with the register-path layout for rows of lk <= 8192
// keys in packs of N: the smallest team that holds the row with one pack per thread up to a
// warp, then up to 32 / N packs per thread, then teams of 64 .. 256 threads.
template <int N, class F>
void with_row_layout(int64_t lk, F&& f) {
  using std::integral_constant;
  constexpr int kMaxPacks = kMaxLaneKeys / N;  // 4 (fp16, bf16) or 8 (fp32)
  using One = integral_constant<int, 1>;
  using Full = integral_constant<int, kMaxPacks>;
  if (lk <= 4 * N)
    f(integral_constant<int, 4>{}, One{});
  else if (lk <= 8 * N)
    f(integral_constant<int, 8>{}, One{});
  else if (lk <= 16 * N)
    f(integral_constant<int, 16>{}, One{});
  else if (lk <= 32 * N)
    f(integral_constant<int, 32>{}, One{});
  else if (lk <= 64 * N)
    f(integral_constant<int, 32>{}, integral_constant<int, 2>{});
  else if (kMaxPacks > 4 && lk <= 128 * N)
    f(integral_constant<int, 32>{}, integral_constant<int, 4>{});
  else if (lk <= 32 * kMaxLaneKeys)
    f(integral_constant<int, 32>{}, Full{});
  else if (lk <= 64 * kMaxLaneKeys)
    f(integral_constant<int, 64>{}, Full{});
  else if (lk <= 128 * kMaxLaneKeys)
    f(integral_constant<int, 128>{}, Full{});
  else
    f(integral_constant<int, kMaxTeam>{}, Full{});
}

}  // namespace

void launch_softmax_forward(const void* scores, void* probs, const uint8_t* key_pad, bool causal,
                            int64_t batch, int64_t heads, int64_t len_q, int64_t len_k, DType dt,
                            cudaStream_t s) {
  int64_t rows = batch * heads * len_q;
  if (rows == 0 || len_k == 0) return;
  RowMask mask{key_pad, causal, heads, len_q, len_k};
  dispatch_dtype(dt, "softmax_forward", [&](auto tv) {
    using T = decltype(tv);
    constexpr int N = int(16 / sizeof(T));
    if (len_k <= kRegisterMaxLk) {
      const bool vec = len_k % N == 0 && aligned16(scores) && aligned16(probs);
      const bool pad_vec = vec && reinterpret_cast<uintptr_t>(key_pad) % N == 0;
      with_row_layout<N>(len_k, [&](auto team, auto packs) {
        constexpr int TPR = decltype(team)::value, P = decltype(packs)::value;
        constexpr int kThreads = block_threads<TPR>(), kRowsPerBlock = kThreads / TPR;
        launch_kernel("softmax_forward", softmax_forward_register_kernel<T, TPR, P>,
                      unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock), kThreads, 0, s,
                      static_cast<const T*>(scores), static_cast<T*>(probs), mask, rows, vec,
                      pad_vec);
      });
    } else {
      launch_kernel("softmax_forward", softmax_forward_block_kernel<T>, unsigned(rows),
                    kLongThreads, 0, s, static_cast<const T*>(scores), static_cast<T*>(probs),
                    mask);
    }
  });
}

void launch_softmax_backward(const void* d_dropped, const void* probs, void* d_scores, int64_t rows,
                             int64_t len_k, float p, DropoutKey key, DType dt, cudaStream_t s) {
  if (rows == 0 || len_k == 0) return;
  DropoutParams d = make_dropout(p, key);
  dispatch_dtype(dt, "softmax_backward", [&](auto tv) {
    using T = decltype(tv);
    constexpr int N = int(16 / sizeof(T));
    if (len_k <= kRegisterMaxLk) {
      const bool vec =
          len_k % N == 0 && aligned16(d_dropped) && aligned16(probs) && aligned16(d_scores);
      with_row_layout<N>(len_k, [&](auto team, auto packs) {
        constexpr int TPR = decltype(team)::value, P = decltype(packs)::value;
        constexpr int kThreads = block_threads<TPR>(), kRowsPerBlock = kThreads / TPR;
        launch_kernel("softmax_backward", softmax_backward_register_kernel<T, TPR, P>,
                      unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock), kThreads, 0, s,
                      static_cast<const T*>(d_dropped), static_cast<const T*>(probs),
                      static_cast<T*>(d_scores), rows, int(len_k), d, vec);
      });
    } else {
      launch_kernel("softmax_backward", softmax_backward_block_kernel<T>, unsigned(rows),
                    kLongThreads, 0, s, static_cast<const T*>(d_dropped),
                    static_cast<const T*>(probs), static_cast<T*>(d_scores), len_k, d);
    }
  });
}

}  // namespace cuda
}  // namespace ls
