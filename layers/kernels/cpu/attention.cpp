// CPU reference of the attention data movement and softmax.
// Shapes: B batch, L length, H heads, D head_dim, n = number of packed projections (3 for
// QKV, 2 for K/V, 1 for Q).
//   split_heads   in [B*L, n*H*D] (+ bias [n*H*D]) -> out [n, B, H, L, D]
//   merge_heads   in [n, B, H, L, D] -> out [B*L, n*H*D] (the inverse permutation)
//   softmax       scores, probs [B, H, Lq, Lk]; one row per (b, h, q), key_pad [B, Lk] (1 =
//                 masked), causal masks k > q; a row with every key masked is all zeros.
//   softmax bwd   d_scores = P * (dP - sum_k dP P) with dP = dropout_bwd(d_dropped), the
//                 dropout element index being the flat index row*Lk + k in probs.
// Statistics (max, sum of exponentials, the backward dot product) accumulate in acc.
#include <cmath>
#include <cstdint>
#include <limits>

#include "layers/kernels/cpu/cpu_kernels.h"

namespace ls {
namespace cpu {
namespace {

// Offset of element (i, b, h, l, d) in the head-major layout [n, B, H, L, D].
inline int64_t head_major_index(int64_t i, int64_t b, int64_t h, int64_t l, int64_t d,
                                int64_t batch, int64_t heads, int64_t len, int64_t head_dim) {
  return (((i * batch + b) * heads + h) * len + l) * head_dim + d;
}

}  // namespace

template <typename T>
void split_heads(const T* in, const T* bias, T* out, int64_t n, int64_t batch, int64_t len,
                 int64_t heads, int64_t head_dim) {
  using A = acc_t<T>;
  const int64_t width = n * heads * head_dim;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t l = 0; l < len; ++l)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t d = 0; d < head_dim; ++d) {
            const int64_t col = (i * heads + h) * head_dim + d;
            A v = static_cast<A>(in[(b * len + l) * width + col]);
            if (bias) v += static_cast<A>(bias[col]);
            out[head_major_index(i, b, h, l, d, batch, heads, len, head_dim)] = static_cast<T>(v);
          }
}

template <typename T>
void merge_heads(const T* in, T* out, int64_t n, int64_t batch, int64_t len, int64_t heads,
                 int64_t head_dim) {
  const int64_t width = n * heads * head_dim;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t l = 0; l < len; ++l)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t d = 0; d < head_dim; ++d) {
            const int64_t col = (i * heads + h) * head_dim + d;
            out[(b * len + l) * width + col] =
                in[head_major_index(i, b, h, l, d, batch, heads, len, head_dim)];
          }
}

template <typename T>
void softmax_forward(const T* scores, T* probs, const uint8_t* key_pad, bool causal, int64_t batch,
                     int64_t heads, int64_t len_q, int64_t len_k) {
  using A = acc_t<T>;
  for (int64_t b = 0; b < batch; ++b) {
    const uint8_t* pad = key_pad ? key_pad + b * len_k : nullptr;
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t q = 0; q < len_q; ++q) {
        const int64_t row = (b * heads + h) * len_q + q;
        const T* s = scores + row * len_k;
        T* out = probs + row * len_k;
        auto visible = [&](int64_t k) { return !(pad && pad[k]) && !(causal && k > q); };

        A max = -std::numeric_limits<A>::infinity();
        bool any = false;
        for (int64_t k = 0; k < len_k; ++k) {
          if (!visible(k)) continue;
          any = true;
          if (static_cast<A>(s[k]) > max) max = static_cast<A>(s[k]);
        }
        if (!any) {
          for (int64_t k = 0; k < len_k; ++k) out[k] = T(0);
          continue;
        }
        A sum = 0;
        for (int64_t k = 0; k < len_k; ++k)
          if (visible(k)) sum += std::exp(static_cast<A>(s[k]) - max);
        const A inv = A(1) / sum;
        // Each score is read before its probability overwrites it (probs may alias scores).
        for (int64_t k = 0; k < len_k; ++k) {
          out[k] = visible(k) ? static_cast<T>(std::exp(static_cast<A>(s[k]) - max) * inv) : T(0);
        }
      }
    }
  }
}

template <typename T>
void softmax_backward(const T* d_dropped, const T* probs, T* d_scores, int64_t rows, int64_t len_k,
                      float p, DropoutKey key) {
  using A = acc_t<T>;
  DropoutMask mask(p, key);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t base = r * len_k;
    A dot = 0;
    for (int64_t k = 0; k < len_k; ++k) {
      const int64_t i = base + k;
      dot += static_cast<A>(d_dropped[i]) * mask.factor<A>(i) * static_cast<A>(probs[i]);
    }
    for (int64_t k = 0; k < len_k; ++k) {
      const int64_t i = base + k;
      const A dp = static_cast<A>(d_dropped[i]) * mask.factor<A>(i);
      d_scores[i] = static_cast<T>(static_cast<A>(probs[i]) * (dp - dot));
    }
  }
}

#define LS_INSTANTIATE_ATTENTION(T)                                                               \
  template void split_heads<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t,        \
                               int64_t);                                                          \
  template void merge_heads<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t);        \
  template void softmax_forward<T>(const T*, T*, const uint8_t*, bool, int64_t, int64_t, int64_t, \
                                   int64_t);                                                      \
  template void softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t, float, DropoutKey);

LS_INSTANTIATE_ATTENTION(float)
LS_INSTANTIATE_ATTENTION(double)
#undef LS_INSTANTIATE_ATTENTION

}  // namespace cpu
}  // namespace ls
