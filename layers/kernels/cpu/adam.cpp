// CPU reference optimizer kernels over the flat acc buffers (params, grads, m, v [n]).
//   sum_squares   out[0] += sum x^2 (inf/NaN propagate)
//   adam_update   g = grad * step.mult; AdamW: p -= lr*wd*p, Adam (L2): g += wd*p;
//                 m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//                 p -= lr * (m / bias1) / (sqrt(v / bias2) + eps);
//                 work[i] = (W) p when a working copy is given.
// The unscale (step.mult), the update and the working-copy write are one pass; a non-zero
// step.skip (overflow detected by update_control) leaves every buffer untouched.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "layers/kernels/cpu/cpu_kernels.h"

namespace ls {
namespace cpu {

template <typename A>
void sum_squares(const A* x, size_t n, A* out) {
  A sum = 0;
  for (size_t i = 0; i < n; ++i) sum += x[i] * x[i];
  out[0] += sum;
}

template <typename A, typename W>
void adam_update(A* params, const A* grads, A* m, A* v, W* work, size_t n, const Ops::AdamArgs& h,
                 const AdamStep& step) {
  if (step.skip != 0) return;
  const A lr = static_cast<A>(step.lr), b1 = static_cast<A>(h.beta1), b2 = static_cast<A>(h.beta2);
  const A eps = static_cast<A>(h.eps), wd = static_cast<A>(h.weight_decay);
  const A bias1 = static_cast<A>(step.bias1), bias2 = static_cast<A>(step.bias2);
  const A mult = static_cast<A>(step.mult);
  for (size_t i = 0; i < n; ++i) {
    A p = params[i];
    A g = grads[i] * mult;
    if (h.decoupled) {
      p -= lr * wd * p;
    } else {
      g += wd * p;
    }
    const A mi = b1 * m[i] + (A(1) - b1) * g;
    const A vi = b2 * v[i] + (A(1) - b2) * g * g;
    p -= lr * (mi / bias1) / (std::sqrt(vi / bias2) + eps);
    m[i] = mi;
    v[i] = vi;
    params[i] = p;
    if (work) work[i] = static_cast<W>(p);
  }
}

template void sum_squares<float>(const float*, size_t, float*);
template void sum_squares<double>(const double*, size_t, double*);
template void adam_update<float, float>(float*, const float*, float*, float*, float*, size_t,
                                        const Ops::AdamArgs&, const AdamStep&);
template void adam_update<float, double>(float*, const float*, float*, float*, double*, size_t,
                                         const Ops::AdamArgs&, const AdamStep&);
template void adam_update<double, float>(double*, const double*, double*, double*, float*, size_t,
                                         const Ops::AdamArgs&, const AdamStep&);
template void adam_update<double, double>(double*, const double*, double*, double*, double*, size_t,
                                          const Ops::AdamArgs&, const AdamStep&);

}  // namespace cpu
}  // namespace ls
