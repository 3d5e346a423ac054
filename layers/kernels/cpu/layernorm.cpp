// CPU reference LayerNorm over the last dimension, one row at a time.
// Shapes: x, y, dy, dx, d_residual [R, C]; gamma, beta [C] (dt); mean, rstd [R] and
// d_gamma, d_beta [C] (acc).
// forward:  mean = sum(x)/C, var = sum((x-mean)^2)/C (two passes), rstd = 1/sqrt(var + eps),
//           y = (x - mean) * rstd * gamma + beta.
// backward: xhat = (x - mean) * rstd, g = dy * gamma,
//           dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) (+ d_residual in the same pass),
//           d_gamma += sum over rows of dy * xhat, d_beta += sum over rows of dy.
// backward from the output: the same with xhat = (y - beta) / gamma (y the forward's output).
// output: y from x and saved mean / rstd, the forward's last loop on its own (the same bits).
#include <cmath>
#include <cstdint>

#include "layers/kernels/cpu/cpu_kernels.h"

namespace ls {
namespace cpu {

namespace {

// One row of the forward's output from the row's statistics: the forward and layernorm_output
// share it, so both write the same bits.
template <typename T>
void layernorm_output_row(const T* xr, const T* gamma, const T* beta, T* yr, acc_t<T> mu,
                          acc_t<T> rs, int64_t cols) {
  using A = acc_t<T>;
  for (int64_t c = 0; c < cols; ++c) {
    const A xhat = (static_cast<A>(xr[c]) - mu) * rs;
    yr[c] = static_cast<T>(xhat * static_cast<A>(gamma[c]) + static_cast<A>(beta[c]));
  }
}

}  // namespace

template <typename T>
void layernorm_forward(const T* x, const T* gamma, const T* beta, T* y, acc_t<T>* mean,
                       acc_t<T>* rstd, int64_t rows, int64_t cols, float eps) {
  using A = acc_t<T>;
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    A sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += static_cast<A>(xr[c]);
    const A mu = sum / static_cast<A>(cols);
    A sq = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const A d = static_cast<A>(xr[c]) - mu;
      sq += d * d;
    }
    const A rs = A(1) / std::sqrt(sq / static_cast<A>(cols) + static_cast<A>(eps));
    layernorm_output_row(xr, gamma, beta, yr, mu, rs, cols);
    mean[r] = mu;
    rstd[r] = rs;
  }
}

namespace {

// The backward over rows given xhat(r, c) (from the input or from the output).
template <typename T, class Xhat>
void layernorm_backward_rows(const T* dy, const T* gamma, const acc_t<T>* rstd, const T* d_residual,
                             T* dx, acc_t<T>* d_gamma, acc_t<T>* d_beta, int64_t rows, int64_t cols,
                             Xhat xhat_at) {
  using A = acc_t<T>;
  for (int64_t r = 0; r < rows; ++r) {
    const T* dyr = dy + r * cols;
    const A rs = rstd[r];
    // Row means of g = dy * gamma and of g * xhat.
    A sum_g = 0, sum_g_xhat = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const A xhat = xhat_at(r, c);
      const A g = static_cast<A>(dyr[c]) * static_cast<A>(gamma[c]);
      sum_g += g;
      sum_g_xhat += g * xhat;
      d_gamma[c] += static_cast<A>(dyr[c]) * xhat;
      d_beta[c] += static_cast<A>(dyr[c]);
    }
    const A mean_g = sum_g / static_cast<A>(cols);
    const A mean_g_xhat = sum_g_xhat / static_cast<A>(cols);
    for (int64_t c = 0; c < cols; ++c) {
      const A xhat = xhat_at(r, c);
      const A g = static_cast<A>(dyr[c]) * static_cast<A>(gamma[c]);
      A d = rs * (g - mean_g - xhat * mean_g_xhat);
      if (d_residual) d += static_cast<A>(d_residual[r * cols + c]);
      dx[r * cols + c] = static_cast<T>(d);
    }
  }
}

}  // namespace

template <typename T>
void layernorm_backward(const T* dy, const T* x, const T* gamma, const acc_t<T>* mean,
                        const acc_t<T>* rstd, const T* d_residual, T* dx, acc_t<T>* d_gamma,
                        acc_t<T>* d_beta, int64_t rows, int64_t cols) {
  using A = acc_t<T>;
  layernorm_backward_rows(
      dy, gamma, rstd, d_residual, dx, d_gamma, d_beta, rows, cols,
      [&](int64_t r, int64_t c) { return (static_cast<A>(x[r * cols + c]) - mean[r]) * rstd[r]; });
}

template <typename T>
void layernorm_output(const T* x, const T* gamma, const T* beta, const acc_t<T>* mean,
                      const acc_t<T>* rstd, T* y, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    layernorm_output_row(x + r * cols, gamma, beta, y + r * cols, mean[r], rstd[r], cols);
}

template <typename T>
void layernorm_backward_from_output(const T* dy, const T* y, const T* gamma, const T* beta,
                                    const acc_t<T>* rstd, const T* d_residual, T* dx,
                                    acc_t<T>* d_gamma, acc_t<T>* d_beta, int64_t rows,
                                    int64_t cols) {
  using A = acc_t<T>;
  layernorm_backward_rows(dy, gamma, rstd, d_residual, dx, d_gamma, d_beta, rows, cols,
                          [&](int64_t r, int64_t c) {
                            return (static_cast<A>(y[r * cols + c]) - static_cast<A>(beta[c])) /
                                   static_cast<A>(gamma[c]);
                          });
}

template void layernorm_forward<float>(const float*, const float*, const float*, float*, float*,
                                       float*, int64_t, int64_t, float);
template void layernorm_forward<double>(const double*, const double*, const double*, double*,
                                        double*, double*, int64_t, int64_t, float);
template void layernorm_backward<float>(const float*, const float*, const float*, const float*,
                                        const float*, const float*, float*, float*, float*, int64_t,
                                        int64_t);
template void layernorm_backward<double>(const double*, const double*, const double*, const double*,
                                         const double*, const double*, double*, double*, double*,
                                         int64_t, int64_t);
template void layernorm_output<float>(const float*, const float*, const float*, const float*,
                                      const float*, float*, int64_t, int64_t);
template void layernorm_output<double>(const double*, const double*, const double*, const double*,
                                       const double*, double*, int64_t, int64_t);
template void layernorm_backward_from_output<float>(const float*, const float*, const float*,
                                                    const float*, const float*, const float*,
                                                    float*, float*, float*, int64_t, int64_t);
template void layernorm_backward_from_output<double>(const double*, const double*, const double*,
                                                     const double*, const double*, const double*,
                                                     double*, double*, double*, int64_t, int64_t);

}  // namespace cpu
}  // namespace ls
