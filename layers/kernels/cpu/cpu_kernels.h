// Internal header of the CPU reference backend: the typed kernels behind CpuOps.
//
// Every function is a template on the element type T (float or double) and is explicitly
// instantiated for both in the .cpp file of its concept. A = acc_t<T> is the type of
// statistics, parameter gradients and optimizer state (double for double, float for float),
// matching accum_dtype() of runtime/dtype.h. The functions assume validated arguments: the
// checks that name the failing call live in cpu_ops.cpp, except the ones that need to look at
// data (token ids), which live next to the loop that reads it.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "layers/kernels/ops.h"
#include "layers/kernels/philox.h"

namespace ls {
namespace cpu {

template <typename T>
struct Accum {
  using type = T;  // float accumulates in float, double in double (accum_dtype of dt)
};
template <typename T>
using acc_t = typename Accum<T>::type;

// Walks the dropout mask of one call. keep(i) equals dropout_keep(key, i, threshold) for every
// flat element index i, but draws one Philox block per eight consecutive indices when the
// indices are visited in increasing order (the usual loop). p == 0 draws nothing.
class DropoutMask {
 public:
  DropoutMask(float p, DropoutKey key)
      : active_(p > 0.f),
        threshold_(dropout_keep_threshold(p)),
        key_{key.seed, dropout_offset(key), nullptr},  // the pass counter resolved once
        scale_(1.0 / (1.0 - static_cast<double>(p))) {}

  bool keep(uint64_t i) {
    if (!active_) return true;
    uint64_t block = i >> 3;
    if (!has_block_ || block != block_) {
      words_ = dropout_draw(key_.seed, block, key_.offset);
      block_ = block;
      has_block_ = true;
    }
    return dropout_lane(words_, int(i & 7)) < threshold_;
  }

  // The factor applied to element i: 1/(1-p) when kept, 0 when dropped (1 when p == 0).
  template <typename A>
  A factor(uint64_t i) {
    if (!active_) return A(1);
    return keep(i) ? static_cast<A>(scale_) : A(0);
  }

 private:
  bool active_;
  uint32_t threshold_;
  DropoutKey key_;
  double scale_;
  bool has_block_ = false;
  uint64_t block_ = 0;
  Philox4 words_{};
};

// act(x) and act'(x) for the activations of ops.h (GELU is the tanh approximation).
template <typename A>
inline A activation(Activation act, A x) {
  if (act == Activation::ReLU) return x > A(0) ? x : A(0);
  const A k = static_cast<A>(0.7978845608028654);  // sqrt(2/pi)
  const A c = static_cast<A>(0.044715);
  A u = k * (x + c * x * x * x);
  return A(0.5) * x * (A(1) + std::tanh(u));
}

template <typename A>
inline A activation_derivative(Activation act, A x) {
  if (act == Activation::ReLU) return x > A(0) ? A(1) : A(0);
  const A k = static_cast<A>(0.7978845608028654);
  const A c = static_cast<A>(0.044715);
  A u = k * (x + c * x * x * x);
  A t = std::tanh(u);
  A du = k * (A(1) + A(3) * c * x * x);
  return A(0.5) * (A(1) + t) + A(0.5) * x * (A(1) - t * t) * du;
}

// ---- memory (cpu_ops.cpp) ----
template <typename S, typename D>
void cast(const S* src, D* dst, size_t n);
template <typename T>
void add_inplace(T* y, const T* x, size_t n);

// ---- gemm.cpp: GemmArgs with ab_type = c_type = T ----
template <typename T>
void gemm(const GemmArgs& g);

// ---- embedding.cpp ----
template <typename T>
void embedding_forward(const EmbeddingArgs& a, const T* table, T* out);
template <typename T>
void embedding_backward(const EmbeddingArgs& a, const T* d_out, acc_t<T>* d_table,
                        acc_t<T>* d_positions);

// ---- layernorm.cpp ----
template <typename T>
void layernorm_forward(const T* x, const T* gamma, const T* beta, T* y, acc_t<T>* mean,
                       acc_t<T>* rstd, int64_t rows, int64_t cols, float eps);
template <typename T>
void layernorm_backward(const T* dy, const T* x, const T* gamma, const acc_t<T>* mean,
                        const acc_t<T>* rstd, const T* d_residual, T* dx, acc_t<T>* d_gamma,
                        acc_t<T>* d_beta, int64_t rows, int64_t cols);
// y = (x - mean) * rstd * gamma + beta from saved statistics: the forward's output bit for bit.
template <typename T>
void layernorm_output(const T* x, const T* gamma, const T* beta, const acc_t<T>* mean,
                      const acc_t<T>* rstd, T* y, int64_t rows, int64_t cols);
template <typename T>
void layernorm_backward_from_output(const T* dy, const T* y, const T* gamma, const T* beta,
                                    const acc_t<T>* rstd, const T* d_residual, T* dx,
                                    acc_t<T>* d_gamma, acc_t<T>* d_beta, int64_t rows,
                                    int64_t cols);

// ---- dropout_fusions.cpp ----
template <typename T>
void bias_dropout_residual_forward(const T* x, const T* bias, const T* residual, T* out,
                                   int64_t rows, int64_t cols, float p, DropoutKey key);
template <typename T>
void dropout_bias_backward(const T* d_out, T* dx, acc_t<T>* d_bias, int64_t rows, int64_t cols,
                           float p, DropoutKey key);
template <typename T>
void act_dropout_forward(const T* pre, T* out, int64_t rows, int64_t cols, Activation act, float p,
                         DropoutKey key);
template <typename T>
void act_dropout_backward(const T* d_out, const T* pre, T* d_pre, acc_t<T>* d_bias, int64_t rows,
                          int64_t cols, Activation act, float p, DropoutKey key);
template <typename T>
void relu_dropout_backward_from_output(const T* d_out, const T* out, T* d_pre, acc_t<T>* d_bias,
                                       int64_t rows, int64_t cols, float p);
template <typename T>
void dropout_forward(const T* x, T* out, size_t n, float p, DropoutKey key);
template <typename T>
void bias_grad(const T* dy, acc_t<T>* d_bias, int64_t rows, int64_t cols);

// ---- attention.cpp ----
template <typename T>
void split_heads(const T* in, const T* bias, T* out, int64_t n, int64_t batch, int64_t len,
                 int64_t heads, int64_t head_dim);
template <typename T>
void merge_heads(const T* in, T* out, int64_t n, int64_t batch, int64_t len, int64_t heads,
                 int64_t head_dim);
template <typename T>
void softmax_forward(const T* scores, T* probs, const uint8_t* key_pad, bool causal, int64_t batch,
                     int64_t heads, int64_t len_q, int64_t len_k);
template <typename T>
void softmax_backward(const T* d_dropped, const T* probs, T* d_scores, int64_t rows, int64_t len_k,
                      float p, DropoutKey key);
// Fused attention (ops.h AttentionArgs); pointers in a are of type T (lse, delta: acc_t<T>).
template <typename T>
void fused_attention_forward(const AttentionArgs& a);
template <typename T>
void fused_attention_backward(const AttentionArgs& a, const T* d_ctx, T* dq, T* dk, T* dv,
                              acc_t<T>* delta, acc_t<T>* d_bias);

// ---- cross_entropy.cpp ----
template <typename T>
void cross_entropy_forward(const T* logits, const int32_t* targets, acc_t<T>* lse, acc_t<T>* sums,
                           int64_t rows, int64_t vocab, int32_t padding_idx, float eps);
template <typename T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const acc_t<T>* lse,
                            const acc_t<T>* grad_scale, T* d_logits, int64_t rows, int64_t vocab,
                            int32_t padding_idx, float eps);

// ---- adam.cpp (A is the accumulation type of the flat buffers, W the working copy's) ----
template <typename A>
void sum_squares(const A* x, size_t n, A* out);
template <typename A, typename W>
void adam_update(A* params, const A* grads, A* m, A* v, W* work, size_t n, const Ops::AdamArgs& h,
                 const AdamStep& step);

}  // namespace cpu
}  // namespace ls
