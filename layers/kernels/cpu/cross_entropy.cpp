// CPU reference label-smoothed cross-entropy (fairseq's label_smoothed_nll_loss), one row
// (token) at a time. Shapes: logits, d_logits [T, V]; targets [T] (int32); lse [T] (acc);
// sums [3] (acc); grad_scale [1] (acc).
// forward, for each row t with target y != padding_idx:
//   lse = logsumexp(logits[t]), nll = lse - logits[t, y], smooth = V*lse - sum_v logits[t, v],
//   loss = (1 - eps - eps/(V-1)) * nll + eps/(V-1) * smooth;
//   sums += {loss, nll, 1}. lse is written for every row (padding rows too).
// backward recomputes softmax from logits and the saved lse:
//   d_logits[t, v] = grad_scale * (exp(logits[t, v] - lse) - q_v), q_y = 1 - eps,
//   q_v = eps/(V-1) otherwise; rows with a padding target are zero.
#include <cmath>
#include <cstdint>

#include "layers/kernels/cpu/cpu_kernels.h"
#include "runtime/error.h"

namespace ls {
namespace cpu {
namespace {

void check_targets(const int32_t* targets, int64_t rows, int64_t vocab, int32_t padding_idx,
                   const char* call) {
  for (int64_t t = 0; t < rows; ++t) {
    const int32_t y = targets[t];
    LS_CHECK_ARG(y == padding_idx || (y >= 0 && y < vocab),
                 call << ": target " << y << " at row " << t << " is outside [0, vocab=" << vocab
                      << ") and is not the padding index " << padding_idx);
  }
}

}  // namespace

template <typename T>
void cross_entropy_forward(const T* logits, const int32_t* targets, acc_t<T>* lse, acc_t<T>* sums,
                           int64_t rows, int64_t vocab, int32_t padding_idx, float eps) {
  using A = acc_t<T>;
  check_targets(targets, rows, vocab, padding_idx, "cross_entropy_forward");
  const A eps_other = static_cast<A>(eps) / static_cast<A>(vocab - 1);
  const A w_nll = A(1) - static_cast<A>(eps) - eps_other;
  A loss_sum = 0, nll_sum = 0, count = 0;
  for (int64_t t = 0; t < rows; ++t) {
    const T* z = logits + t * vocab;
    A max = static_cast<A>(z[0]);
    for (int64_t v = 1; v < vocab; ++v)
      if (static_cast<A>(z[v]) > max) max = static_cast<A>(z[v]);
    A sum_exp = 0, sum_logits = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      sum_exp += std::exp(static_cast<A>(z[v]) - max);
      sum_logits += static_cast<A>(z[v]);
    }
    const A row_lse = max + std::log(sum_exp);
    lse[t] = row_lse;
    const int32_t y = targets[t];
    if (y == padding_idx) continue;
    const A nll = row_lse - static_cast<A>(z[y]);
    const A smooth = static_cast<A>(vocab) * row_lse - sum_logits;
    loss_sum += w_nll * nll + eps_other * smooth;
    nll_sum += nll;
    count += A(1);
  }
  sums[0] += loss_sum;
  sums[1] += nll_sum;
  sums[2] += count;
}

template <typename T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const acc_t<T>* lse,
                            const acc_t<T>* grad_scale, T* d_logits, int64_t rows, int64_t vocab,
                            int32_t padding_idx, float eps) {
  using A = acc_t<T>;
  check_targets(targets, rows, vocab, padding_idx, "cross_entropy_backward");
  const A eps_other = static_cast<A>(eps) / static_cast<A>(vocab - 1);
  const A q_target = A(1) - static_cast<A>(eps);
  const A scale = grad_scale[0];
  for (int64_t t = 0; t < rows; ++t) {
    const T* z = logits + t * vocab;
    T* dz = d_logits + t * vocab;
    const int32_t y = targets[t];
    if (y == padding_idx) {
      for (int64_t v = 0; v < vocab; ++v) dz[v] = T(0);
      continue;
    }
    for (int64_t v = 0; v < vocab; ++v) {
      const A prob = std::exp(static_cast<A>(z[v]) - lse[t]);
      const A q = v == y ? q_target : eps_other;
      dz[v] = static_cast<T>(scale * (prob - q));
    }
  }
}

#define LS_INSTANTIATE_CROSS_ENTROPY(T)                                                           \
  template void cross_entropy_forward<T>(const T*, const int32_t*, acc_t<T>*, acc_t<T>*, int64_t, \
                                         int64_t, int32_t, float);                                \
  template void cross_entropy_backward<T>(const T*, const int32_t*, const acc_t<T>*,              \
                                          const acc_t<T>*, T*, int64_t, int64_t, int32_t, float);

LS_INSTANTIATE_CROSS_ENTROPY(float)
LS_INSTANTIATE_CROSS_ENTROPY(double)
#undef LS_INSTANTIATE_CROSS_ENTROPY

}  // namespace cpu
}  // namespace ls
