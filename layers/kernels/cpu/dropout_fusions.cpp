// CPU reference of the elementwise fusions around dropout (one pass over [R, C], element
// index i = r*C + c for the dropout mask, see philox.h):
//   bias_dropout_residual_forward  out = residual + dropout(x + bias)
//   dropout_bias_backward          dx = dropout_bwd(d_out); d_bias += column sums of dx
//   act_dropout_forward            out = dropout(act(pre))
//   act_dropout_backward           d_pre = act'(pre) * dropout_bwd(d_out); d_bias += sums
//   relu_dropout_backward_from_output
//                                  the same for ReLU from out = dropout(relu(pre)):
//                                  d_pre = d_out * (out > 0 ? 1/(1-p) : 0); no mask drawn
//   dropout_forward                out = dropout(x) over n elements
//   bias_grad                      d_bias += column sums of dy
// dropout(x)_i = x_i / (1-p) when element i is kept, else 0; dropout_bwd is the same map.
// Outputs may alias inputs of the same shape: each element is read before it is written.
#include <cstddef>
#include <cstdint>

#include "layers/kernels/cpu/cpu_kernels.h"

namespace ls {
namespace cpu {

template <typename T>
void bias_dropout_residual_forward(const T* x, const T* bias, const T* residual, T* out,
                                   int64_t rows, int64_t cols, float p, DropoutKey key) {
  using A = acc_t<T>;
  DropoutMask mask(p, key);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      A v = static_cast<A>(x[i]);
      if (bias) v += static_cast<A>(bias[c]);
      out[i] = static_cast<T>(static_cast<A>(residual[i]) + v * mask.factor<A>(i));
    }
  }
}

template <typename T>
void dropout_bias_backward(const T* d_out, T* dx, acc_t<T>* d_bias, int64_t rows, int64_t cols,
                           float p, DropoutKey key) {
  using A = acc_t<T>;
  DropoutMask mask(p, key);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      dx[i] = static_cast<T>(static_cast<A>(d_out[i]) * mask.factor<A>(i));
    }
  }
  if (d_bias) bias_grad(dx, d_bias, rows, cols);
}

template <typename T>
void act_dropout_forward(const T* pre, T* out, int64_t rows, int64_t cols, Activation act, float p,
                         DropoutKey key) {
  using A = acc_t<T>;
  DropoutMask mask(p, key);
  const int64_t n = rows * cols;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<T>(activation(act, static_cast<A>(pre[i])) * mask.factor<A>(i));
  }
}

template <typename T>
void act_dropout_backward(const T* d_out, const T* pre, T* d_pre, acc_t<T>* d_bias, int64_t rows,
                          int64_t cols, Activation act, float p, DropoutKey key) {
  using A = acc_t<T>;
  DropoutMask mask(p, key);
  const int64_t n = rows * cols;
  for (int64_t i = 0; i < n; ++i) {
    const A g = static_cast<A>(d_out[i]) * mask.factor<A>(i);
    d_pre[i] = static_cast<T>(g * activation_derivative(act, static_cast<A>(pre[i])));
  }
  if (d_bias) bias_grad(d_pre, d_bias, rows, cols);
}

// out > 0 exactly where act_dropout_backward(ReLU) has factor 1/(1-p) and relu'(pre) = 1
// (relu(pre) > 0 and kept; the scale 1/(1-p) > 1 cannot round a positive value to 0). The
// product form keeps non-finite d_out propagating as act_dropout_backward does (inf * 0).
template <typename T>
void relu_dropout_backward_from_output(const T* d_out, const T* out, T* d_pre, acc_t<T>* d_bias,
                                       int64_t rows, int64_t cols, float p) {
  using A = acc_t<T>;
  const A scale = p > 0.f ? static_cast<A>(1.0 / (1.0 - static_cast<double>(p))) : A(1);
  const int64_t n = rows * cols;
  for (int64_t i = 0; i < n; ++i) {
    const A f = static_cast<A>(out[i]) > A(0) ? scale : A(0);
    d_pre[i] = static_cast<T>(static_cast<A>(d_out[i]) * f);
  }
  if (d_bias) bias_grad(d_pre, d_bias, rows, cols);
}

template <typename T>
void dropout_forward(const T* x, T* out, size_t n, float p, DropoutKey key) {
  using A = acc_t<T>;
  DropoutMask mask(p, key);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<T>(static_cast<A>(x[i]) * mask.factor<A>(i));
}

// Column sums in acc, one column at a time so each sum is a plain sequential reduction.
template <typename T>
void bias_grad(const T* dy, acc_t<T>* d_bias, int64_t rows, int64_t cols) {
  using A = acc_t<T>;
  for (int64_t c = 0; c < cols; ++c) {
    A sum = 0;
    for (int64_t r = 0; r < rows; ++r) sum += static_cast<A>(dy[r * cols + c]);
    d_bias[c] += sum;
  }
}

#define LS_INSTANTIATE_DROPOUT_FUSIONS(T)                                                        \
  template void bias_dropout_residual_forward<T>(const T*, const T*, const T*, T*, int64_t,      \
                                                 int64_t, float, DropoutKey);                    \
  template void dropout_bias_backward<T>(const T*, T*, acc_t<T>*, int64_t, int64_t, float,       \
                                         DropoutKey);                                            \
  template void act_dropout_forward<T>(const T*, T*, int64_t, int64_t, Activation, float,        \
                                       DropoutKey);                                              \
  template void act_dropout_backward<T>(const T*, const T*, T*, acc_t<T>*, int64_t, int64_t,     \
                                        Activation, float, DropoutKey);                          \
  template void relu_dropout_backward_from_output<T>(const T*, const T*, T*, acc_t<T>*, int64_t, \
                                                     int64_t, float);                            \
  template void dropout_forward<T>(const T*, T*, size_t, float, DropoutKey);                     \
  template void bias_grad<T>(const T*, acc_t<T>*, int64_t, int64_t);

LS_INSTANTIATE_DROPOUT_FUSIONS(float)
LS_INSTANTIATE_DROPOUT_FUSIONS(double)
#undef LS_INSTANTIATE_DROPOUT_FUSIONS

}  // namespace cpu
}  // namespace ls
