// CPU reference token + position embedding, fused with the scale and the dropout.
// Shapes: tokens [B, L] (int32), table [V, C], learned positions [P, C], out / d_out [B*L, C].
// forward:  out[t, c] = dropout(scale * table[tok_t, c] + pos(t)[c]), dropout index t*C + c;
//           padding tokens get the table row but no positional embedding.
// backward: d_table[tok_t] += scale * dropout_bwd(d_out[t]) and d_positions[pos(t)] +=
//           dropout_bwd(d_out[t]) for every non-padding token (a sequential loop, so always
//           deterministic).
// Positions follow fairseq's make_positions (the j-th non-padding token of a row, j from 1,
// gets padding_idx + j); the sinusoidal table follows fairseq's SinusoidalPositionalEmbedding
// and is evaluated in double for each element (nothing is cached: no allocation).
#include <cmath>
#include <cstdint>

#include "layers/kernels/cpu/cpu_kernels.h"
#include "runtime/error.h"

namespace ls {
namespace cpu {
namespace {

// Column c of the sinusoidal embedding of position `pos` for an embedding of `dim` columns:
// [sin(pos f_0) .. sin(pos f_{h-1}), cos(pos f_0) .. cos(pos f_{h-1}), (0 if dim is odd)]
// with h = dim/2 and f_i = exp(-i log(10000) / (h - 1)).
double sinusoid(int64_t pos, int64_t c, int64_t dim) {
  const int64_t half = dim / 2;
  if (c >= 2 * half) return 0.0;
  const int64_t i = c < half ? c : c - half;
  const double freq =
      std::exp(-static_cast<double>(i) * std::log(10000.0) / static_cast<double>(half - 1));
  const double angle = static_cast<double>(pos) * freq;
  return c < half ? std::sin(angle) : std::cos(angle);
}

// Throws before any memory is written if a token is outside [0, vocab) or, when a positions
// table is read or written, a position is outside [0, max_positions).
void check_tokens(const EmbeddingArgs& a, bool positions_table, const char* call) {
  for (int64_t b = 0; b < a.batch; ++b) {
    int64_t position = a.padding_idx;
    for (int64_t l = 0; l < a.len; ++l) {
      const int64_t t = b * a.len + l;
      const int32_t tok = a.tokens[t];
      LS_CHECK_ARG(tok >= 0 && tok < a.vocab, call << ": token id " << tok << " at position " << t
                                                   << " (batch " << b << ", index " << l
                                                   << ") is outside [0, vocab=" << a.vocab << ")");
      if (tok == a.padding_idx) continue;
      ++position;
      LS_CHECK_ARG(!positions_table || (position >= 0 && position < a.max_positions),
                   call << ": token at position " << t << " (batch " << b << ", index " << l
                        << ") has position " << position << ", outside the learned table [0, "
                        << a.max_positions << ")");
    }
  }
}

}  // namespace

template <typename T>
void embedding_forward(const EmbeddingArgs& a, const T* table, T* out) {
  using A = acc_t<T>;
  const T* learned = static_cast<const T*>(a.learned_positions);
  check_tokens(a, learned != nullptr, "embedding_forward");
  const int64_t dim = a.dim;
  const A scale = static_cast<A>(a.scale);
  DropoutMask mask(a.dropout, a.key);
  for (int64_t b = 0; b < a.batch; ++b) {
    int64_t position = a.padding_idx;
    for (int64_t l = 0; l < a.len; ++l) {
      const int64_t t = b * a.len + l;
      const int32_t tok = a.tokens[t];
      const bool padding = tok == a.padding_idx;
      if (!padding) ++position;
      for (int64_t c = 0; c < dim; ++c) {
        A value = scale * static_cast<A>(table[tok * dim + c]);
        if (!padding) {
          value += learned ? static_cast<A>(learned[position * dim + c])
                           : static_cast<A>(sinusoid(position, c, dim));
        }
        const uint64_t i = static_cast<uint64_t>(t * dim + c);
        out[i] = static_cast<T>(value * mask.factor<A>(i));
      }
    }
  }
}

template <typename T>
void embedding_backward(const EmbeddingArgs& a, const T* d_out, acc_t<T>* d_table,
                        acc_t<T>* d_positions) {
  using A = acc_t<T>;
  check_tokens(a, d_positions != nullptr, "embedding_backward");
  const int64_t dim = a.dim;
  const A scale = static_cast<A>(a.scale);
  DropoutMask mask(a.dropout, a.key);
  for (int64_t b = 0; b < a.batch; ++b) {
    int64_t position = a.padding_idx;
    for (int64_t l = 0; l < a.len; ++l) {
      const int64_t t = b * a.len + l;
      const int32_t tok = a.tokens[t];
      if (tok == a.padding_idx) continue;
      ++position;
      for (int64_t c = 0; c < dim; ++c) {
        const uint64_t i = static_cast<uint64_t>(t * dim + c);
        const A g = static_cast<A>(d_out[i]) * mask.factor<A>(i);
        if (d_table) d_table[tok * dim + c] += scale * g;
        if (d_positions) d_positions[position * dim + c] += g;
      }
    }
  }
}

template void embedding_forward<float>(const EmbeddingArgs&, const float*, float*);
template void embedding_forward<double>(const EmbeddingArgs&, const double*, double*);
template void embedding_backward<float>(const EmbeddingArgs&, const float*, float*, float*);
template void embedding_backward<double>(const EmbeddingArgs&, const double*, double*, double*);

}  // namespace cpu
}  // namespace ls
