// Masked softmax over attention scores and its backward fused with the attention dropout's
// backward. Rows: r = (b*H + h)*Lq + q over [B, H, Lq, Lk]; key k of row r is visible unless
// key_pad[b*Lk + k] != 0 or (causal and k > q). Invisible keys get probability 0; a row with no
// visible key is all zeros. Statistics (max, sum of exponentials, dot products) in fp32.
// Two paths, no cap on Lk:
//   - short rows (Lk <= 1024): one warp per row (blocks of 4 warps); each lane holds G groups
//     of 4 consecutive elements in registers (G = 1, 2, 4, 8 chosen from Lk), so the row is
//     read once and written once; packed access when Lk % 4 == 0.
//   - long rows (Lk > 1024): one block of 512 threads per row, two passes over global memory:
//     pass 1 keeps a per-thread online (max, sum-exp) and merges them over the block, pass 2
//     re-reads (from L2) and writes. Backward likewise (pass 1: the dot product).
// Backward: d_scores = P * (dP - sum_k dP P), dP = dropout_bwd(d_dropped); the dropout mask is
// regenerated with Philox from the key and the flat index r*Lk + k (one call per 4 keys when
// Lk % 4 == 0). probs may alias scores, d_scores may alias d_dropped: each element is read by
// the thread that later writes it, before it writes it.
#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

constexpr int kShortWarps = 4;
constexpr int kLongThreads = 512;
constexpr int64_t kShortMax = 1024;

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

template <class T, int G>
__global__ void softmax_forward_warp_kernel(const T* scores, T* probs, RowMask mask, int64_t rows) {
  int64_t r = int64_t(blockIdx.x) * kShortWarps + threadIdx.x / 32;
  int lane = threadIdx.x & 31;
  if (r >= rows) return;
  int64_t lk = mask.len_k;
  const T* in = scores + r * lk;
  T* out = probs + r * lk;
  bool aligned = lk % 4 == 0 && pack_aligned<T>(scores) && pack_aligned<T>(probs);
  float v[G][4];
  float mx = -INFINITY;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    int64_t k0 = 4 * (int64_t(lane) + 32 * g);
    bool vec = aligned && k0 + 4 <= lk;
    load4(in, k0, lk, vec, v[g]);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (!mask.visible(r, k0 + j)) v[g][j] = -INFINITY;
      mx = fmaxf(mx, v[g][j]);
    }
  }
  mx = warp_max(mx);
  float sum = 0.f;
#pragma unroll
  for (int g = 0; g < G; ++g)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      v[g][j] = v[g][j] == -INFINITY ? 0.f : expf(v[g][j] - mx);
      sum += v[g][j];
    }
  sum = warp_sum(sum);
  float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    int64_t k0 = 4 * (int64_t(lane) + 32 * g);
    if (k0 >= lk) break;
    bool vec = aligned && k0 + 4 <= lk;
#pragma unroll
    for (int j = 0; j < 4; ++j) v[g][j] *= inv;
    store4(out, k0, lk, vec, v[g]);
  }
}

template <class T>
__global__ void softmax_forward_block_kernel(const T* scores, T* probs, RowMask mask) {
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

template <class T, int G>
__global__ void softmax_backward_warp_kernel(const T* d_dropped, const T* probs, T* d_scores,
                                             int64_t rows, int64_t lk, DropoutParams d) {
  int64_t r = int64_t(blockIdx.x) * kShortWarps + threadIdx.x / 32;
  int lane = threadIdx.x & 31;
  if (r >= rows) return;
  bool aligned = lk % 4 == 0 && pack_aligned<T>(d_dropped) && pack_aligned<T>(probs) &&
                 pack_aligned<T>(d_scores);
  float dp[G][4], p[G][4];
  float dot = 0.f;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    int64_t k0 = 4 * (int64_t(lane) + 32 * g);
    bool vec = aligned && k0 + 4 <= lk;
    float f[4];
    load4(d_dropped + r * lk, k0, lk, vec, dp[g]);
    load4(probs + r * lk, k0, lk, vec, p[g]);
    if (k0 < lk) {
      dropout_factors4(d, uint64_t(r * lk + k0), f);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) f[j] = 0.f;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      dp[g][j] *= f[j];
      dot += dp[g][j] * p[g][j];
    }
  }
  dot = warp_sum(dot);
#pragma unroll
  for (int g = 0; g < G; ++g) {
    int64_t k0 = 4 * (int64_t(lane) + 32 * g);
    if (k0 >= lk) break;
#pragma unroll
    for (int j = 0; j < 4; ++j) dp[g][j] = p[g][j] * (dp[g][j] - dot);
    store4(d_scores + r * lk, k0, lk, aligned && k0 + 4 <= lk, dp[g]);
  }
}

template <class T>
__global__ void softmax_backward_block_kernel(const T* d_dropped, const T* probs, T* d_scores,
                                              int64_t lk, DropoutParams d) {
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

// Calls f(std::integral_constant<int, G>) with the smallest G in {1, 2, 4, 8}, 128 G >= lk.
template <class F>
void with_groups(int64_t lk, F&& f) {
  if (lk <= 128)
    f(std::integral_constant<int, 1>{});
  else if (lk <= 256)
    f(std::integral_constant<int, 2>{});
  else if (lk <= 512)
    f(std::integral_constant<int, 4>{});
  else
    f(std::integral_constant<int, 8>{});
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
    if (len_k <= kShortMax) {
      with_groups(len_k, [&](auto gc) {
        constexpr int G = decltype(gc)::value;
        softmax_forward_warp_kernel<T, G>
            <<<unsigned((rows + kShortWarps - 1) / kShortWarps), 32 * kShortWarps, 0, s>>>(
                static_cast<const T*>(scores), static_cast<T*>(probs), mask, rows);
      });
    } else {
      softmax_forward_block_kernel<T><<<unsigned(rows), kLongThreads, 0, s>>>(
          static_cast<const T*>(scores), static_cast<T*>(probs), mask);
    }
  });
  LS_LAUNCH_CHECK("softmax_forward");
}

void launch_softmax_backward(const void* d_dropped, const void* probs, void* d_scores, int64_t rows,
                             int64_t len_k, float p, DropoutKey key, DType dt, cudaStream_t s) {
  if (rows == 0 || len_k == 0) return;
  DropoutParams d = make_dropout(p, key);
  dispatch_dtype(dt, "softmax_backward", [&](auto tv) {
    using T = decltype(tv);
    if (len_k <= kShortMax) {
      with_groups(len_k, [&](auto gc) {
        constexpr int G = decltype(gc)::value;
        softmax_backward_warp_kernel<T, G>
            <<<unsigned((rows + kShortWarps - 1) / kShortWarps), 32 * kShortWarps, 0, s>>>(
                static_cast<const T*>(d_dropped), static_cast<const T*>(probs),
                static_cast<T*>(d_scores), rows, len_k, d);
      });
    } else {
      softmax_backward_block_kernel<T><<<unsigned(rows), kLongThreads, 0, s>>>(
          static_cast<const T*>(d_dropped), static_cast<const T*>(probs), static_cast<T*>(d_scores),
          len_k, d);
    }
  });
  LS_LAUNCH_CHECK("softmax_backward");
}

}  // namespace cuda
}  // namespace ls
