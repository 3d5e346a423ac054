// CPU reference of the attention data movement and softmax.
// Shapes: B batch, L length, H heads, D head_dim, n = number of packed projections (3 for
// QKV, 2 for K/V, 1 for Q).
//   split_heads   in [B*L, n*H*D] (+ bias [n*H*D]) -> out [n, B, H, L, D]
//   merge_heads   in [n, B, H, L, D] -> out [B*L, n*H*D] (the inverse permutation)
//   softmax       scores, probs [B, H, Lq, Lk]; one row per (b, h, q), key_pad [B, Lk] (1 =
//                 masked), causal masks k > q; a row with every key masked is all zeros.
//   softmax bwd   d_scores = P * (dP - sum_k dP P) with dP = dropout_bwd(d_dropped), the
//                 dropout element index being the flat index row*Lk + k in probs.
//   fused attention (ops.h AttentionArgs): per (b, h, query i) the scores against every key,
//                 the masked softmax, dropout and the weighted sum of values, one row at a
//                 time (nothing of size Lq x Lk is kept); backward recomputes each row's
//                 probabilities from the saved lse, with delta_i = d_ctx_i . ctx_i.
// Statistics (max, sum of exponentials, the backward dot product) accumulate in acc.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

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

// The fused reference allocates nothing (it runs inside the training step): scores are
// recomputed in each pass over the keys, and sums accumulate straight into the outputs, whose
// type is the accumulation type on the CPU (acc_t<T> == T for fp32 and fp64).
template <typename T>
void fused_attention_forward(const AttentionArgs& a) {
  static_assert(std::is_same<acc_t<T>, T>::value, "CPU outputs double as accumulators");
  const int64_t B = a.batch, H = a.heads, Lq = a.len_q, Lk = a.len_k, D = a.head_dim;
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  T* lse = static_cast<T*>(a.lse);
  DropoutMask mask(a.dropout, a.key);
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t b = 0; b < B; ++b) {
    const uint8_t* pad = a.key_pad ? a.key_pad + b * Lk : nullptr;
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < Lq; ++i) {
        const T* qi = q + (b * Lq + i) * a.ld_q + h * D;
        auto visible = [&](int64_t j) { return !(pad && pad[j]) && !(a.causal && j > i); };
        auto score = [&](int64_t j) {
          const T* kj = k + (b * Lk + j) * a.ld_k + h * D;
          T dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qi[d] * kj[d];
          return static_cast<T>(a.scale) * dot;
        };
        T max = neg_inf;
        for (int64_t j = 0; j < Lk; ++j)
          if (visible(j)) max = std::max(max, score(j));
        const int64_t row = (b * H + h) * Lq + i;
        T* o = static_cast<T*>(a.ctx) + (b * Lq + i) * a.ld_ctx + h * D;
        for (int64_t d = 0; d < D; ++d) o[d] = T(0);
        if (max == neg_inf) {  // every key excluded: a zero row
          lse[row] = neg_inf;
          continue;
        }
        T sum = 0;
        for (int64_t j = 0; j < Lk; ++j)
          if (visible(j)) sum += std::exp(score(j) - max);
        lse[row] = max + std::log(sum);
        for (int64_t j = 0; j < Lk; ++j) {
          if (!visible(j)) continue;
          const T pd = std::exp(score(j) - lse[row]) * mask.factor<T>(uint64_t(row * Lk + j));
          const T* vj = v + (b * Lk + j) * a.ld_v + h * D;
          for (int64_t d = 0; d < D; ++d) o[d] += pd * vj[d];
        }
      }
    }
  }
}

template <typename T>
void fused_attention_backward(const AttentionArgs& a, const T* d_ctx, T* dq, T* dk, T* dv,
                              acc_t<T>* delta, acc_t<T>* d_bias) {
  static_assert(std::is_same<acc_t<T>, T>::value, "CPU outputs double as accumulators");
  const int64_t B = a.batch, H = a.heads, Lq = a.len_q, Lk = a.len_k, D = a.head_dim;
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  const T* ctx = static_cast<const T*>(a.ctx);
  const T* lse = static_cast<const T*>(a.lse);
  DropoutMask mask(a.dropout, a.key);
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t b = 0; b < B; ++b) {
    const uint8_t* pad = a.key_pad ? a.key_pad + b * Lk : nullptr;
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t j = 0; j < Lk; ++j)
        for (int64_t d = 0; d < D; ++d) {
          dk[(b * Lk + j) * a.ld_k + h * D + d] = T(0);
          dv[(b * Lk + j) * a.ld_v + h * D + d] = T(0);
        }
      for (int64_t i = 0; i < Lq; ++i) {
        const int64_t row = (b * H + h) * Lq + i;
        const T* qi = q + (b * Lq + i) * a.ld_q + h * D;
        const T* go = d_ctx + (b * Lq + i) * a.ld_ctx + h * D;
        const T* oi = ctx + (b * Lq + i) * a.ld_ctx + h * D;
        T* dqi = dq + (b * Lq + i) * a.ld_q + h * D;
        T dl = 0;
        for (int64_t d = 0; d < D; ++d) dl += go[d] * oi[d];
        delta[row] = dl;
        for (int64_t d = 0; d < D; ++d) dqi[d] = T(0);
        if (lse[row] == neg_inf) continue;  // a fully masked row has no gradient
        for (int64_t j = 0; j < Lk; ++j) {
          if ((pad && pad[j]) || (a.causal && j > i)) continue;
          const T* kj = k + (b * Lk + j) * a.ld_k + h * D;
          const T* vj = v + (b * Lk + j) * a.ld_v + h * D;
          T* dkj = dk + (b * Lk + j) * a.ld_k + h * D;
          T* dvj = dv + (b * Lk + j) * a.ld_v + h * D;
          T dot = 0, dpd = 0;
          for (int64_t d = 0; d < D; ++d) {
            dot += qi[d] * kj[d];
            dpd += go[d] * vj[d];
          }
          const T p = std::exp(static_cast<T>(a.scale) * dot - lse[row]);
          const T f = mask.factor<T>(uint64_t(row * Lk + j));
          // dS = P (dP - delta) with dP = f dPd; the scale of the scores goes to dq and dk.
          const T ds = p * (dpd * f - dl) * static_cast<T>(a.scale);
          for (int64_t d = 0; d < D; ++d) {
            dqi[d] += ds * kj[d];
            dkj[d] += ds * qi[d];
            dvj[d] += p * f * go[d];
          }
        }
      }
    }
  }
  if (d_bias == nullptr) return;
  // The projections' bias gradient: column sums of dq, dk, dv (q | k | v).
  const int64_t HD = H * D;
  for (int64_t t = 0; t < B * Lq; ++t)
    for (int64_t c = 0; c < HD; ++c) d_bias[c] += dq[t * a.ld_q + c];
  for (int64_t t = 0; t < B * Lk; ++t)
    for (int64_t c = 0; c < HD; ++c) {
      d_bias[HD + c] += dk[t * a.ld_k + c];
      d_bias[2 * HD + c] += dv[t * a.ld_v + c];
    }
}

#define LS_INSTANTIATE_ATTENTION(T)                                                                \
  template void split_heads<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t,         \
                               int64_t);                                                           \
  template void merge_heads<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t);         \
  template void softmax_forward<T>(const T*, T*, const uint8_t*, bool, int64_t, int64_t, int64_t,  \
                                   int64_t);                                                       \
  template void softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t, float, DropoutKey);  \
  template void fused_attention_forward<T>(const AttentionArgs&);                                  \
  template void fused_attention_backward<T>(const AttentionArgs&, const T*, T*, T*, T*, acc_t<T>*, \
                                            acc_t<T>*);

LS_INSTANTIATE_ATTENTION(float)
LS_INSTANTIATE_ATTENTION(double)
#undef LS_INSTANTIATE_ATTENTION

}  // namespace cpu
}  // namespace ls
