// Shared helpers for the C++ tests (header-only, no doctest dependency):
// - seeded random data that is the same on every platform (own mapping from mt19937_64 bits,
//   not std::uniform_real_distribution, whose output is implementation-defined);
// - NaN poisoning, so an output element a kernel forgot to write fails the comparison;
// - error measures: relative norm error ||a - b|| / ||b||, max abs difference, dot products;
// - a central finite-difference gradient in double for checking backward passes;
// - status_of(): the ls_status a callable throws (LS_OK if it returns normally).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace ls {
namespace test {

// ---------------------------------------------------------------- random data

class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}

  // Uniform in [lo, hi): the top 53 bits of one draw.
  double uniform(double lo = -1.0, double hi = 1.0) {
    const double unit = static_cast<double>(gen_() >> 11) * 0x1.0p-53;
    return lo + (hi - lo) * unit;
  }

  // Uniform integer in [lo, hi) (hi > lo); the modulo bias is negligible for test ranges.
  int64_t integer(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(gen_() % static_cast<uint64_t>(hi - lo));
  }

 private:
  std::mt19937_64 gen_;
};

template <typename T>
void fill_uniform(T* p, size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Rng rng(seed);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<T>(rng.uniform(lo, hi));
}

template <typename T>
void fill_uniform(std::vector<T>& v, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  fill_uniform(v.data(), v.size(), seed, lo, hi);
}

template <typename T>
std::vector<T> random_vector(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::vector<T> v(n);
  fill_uniform(v, seed, lo, hi);
  return v;
}

// Values with lo <= |x| < hi and a random sign: inputs kept away from a kink at 0 (ReLU) so
// finite differences do not straddle it.
template <typename T>
std::vector<T> random_vector_away_from_zero(size_t n, uint64_t seed, double lo, double hi) {
  Rng rng(seed);
  std::vector<T> v(n);
  for (auto& x : v) {
    const double magnitude = rng.uniform(lo, hi);
    x = static_cast<T>(rng.uniform(0.0, 1.0) < 0.5 ? -magnitude : magnitude);
  }
  return v;
}

// Token ids uniform in [0, vocab).
inline std::vector<int32_t> random_tokens(size_t n, int32_t vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> v(n);
  for (auto& t : v) t = static_cast<int32_t>(rng.integer(0, vocab));
  return v;
}

// Converts element by element (e.g. a double reference input to the fp32 kernel's input).
template <typename To, typename From>
std::vector<To> convert(const std::vector<From>& v) {
  return std::vector<To>(v.begin(), v.end());
}

// Fills with quiet NaN so that any element an operation fails to write shows up.
template <typename T>
void poison(std::vector<T>& v) {
  for (auto& x : v) x = std::numeric_limits<T>::quiet_NaN();
}

// ---------------------------------------------------------------- error measures

// ||a - b||_2 / ||b||_2 over n elements, in double; ||a - b||_2 when b is all zeros. NaN or
// inf anywhere gives +inf, so a comparison `rel_error(...) < tol` fails.
template <typename T, typename U>
double rel_error(const T* a, const U* b, size_t n) {
  double diff = 0.0, ref = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double x = static_cast<double>(a[i]), y = static_cast<double>(b[i]);
    if (!std::isfinite(x) || !std::isfinite(y)) return std::numeric_limits<double>::infinity();
    diff += (x - y) * (x - y);
    ref += y * y;
  }
  return ref > 0.0 ? std::sqrt(diff / ref) : std::sqrt(diff);
}

// As above; vectors of different sizes give +inf.
template <typename T, typename U>
double rel_error(const std::vector<T>& a, const std::vector<U>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  return rel_error(a.data(), b.data(), a.size());
}

// max_i |a_i - b_i| (NaN or inf anywhere gives +inf; different sizes give +inf).
template <typename T, typename U>
double max_abs_diff(const std::vector<T>& a, const std::vector<U>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    if (!std::isfinite(d)) return std::numeric_limits<double>::infinity();
    if (d > m) m = d;
  }
  return m;
}

// sum_i a_i b_i in double (a scalar loss <weights, output> for gradient checks).
template <typename T, typename U>
double dot(const T* a, const U* b, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}

template <typename T, typename U>
double dot(const std::vector<T>& a, const std::vector<U>& b) {
  return dot(a.data(), b.data(), a.size() < b.size() ? a.size() : b.size());
}

// ---------------------------------------------------------------- finite differences

// Central differences of a scalar function of x: grad[i] = (f(x + h_i e_i) - f(x - h_i e_i)) /
// (2 h_i) with h_i = h * max(1, |x_i|). `loss` must read x through the pointer it captured; each
// x_i is perturbed in place and restored bitwise before the next one.
// In double with smooth f and h = 1e-6 the error is O(h^2 f''') ~ 1e-12 plus rounding
// ~ 1e-16 |f| / h ~ 1e-10 |f|, so relative-norm agreement to 1e-6 is a meaningful check.
inline std::vector<double> numeric_gradient(double* x, size_t n,
                                            const std::function<double()>& loss, double h = 1e-6) {
  std::vector<double> grad(n);
  for (size_t i = 0; i < n; ++i) {
    const double saved = x[i];
    const double step = h * (std::fabs(saved) > 1.0 ? std::fabs(saved) : 1.0);
    x[i] = saved + step;
    const double up = loss();
    x[i] = saved - step;
    const double down = loss();
    x[i] = saved;
    grad[i] = (up - down) / (2.0 * step);
  }
  return grad;
}

inline std::vector<double> numeric_gradient(std::vector<double>& x,
                                            const std::function<double()>& loss, double h = 1e-6) {
  return numeric_gradient(x.data(), x.size(), loss, h);
}

// rel_error(analytic, numeric gradient of loss at x): the usual one-line gradient check.
inline double gradient_error(std::vector<double>& x, const std::function<double()>& loss,
                             const std::vector<double>& analytic, double h = 1e-6) {
  return rel_error(analytic, numeric_gradient(x, loss, h));
}

// ---------------------------------------------------------------- errors

// The status an ls::Error thrown by f carries, LS_OK when f returns normally. Any other
// exception propagates (and fails the test that called it).
template <typename F>
ls_status status_of(F&& f) {
  try {
    f();
  } catch (const ls::Error& e) {
    return e.status();
  }
  return LS_OK;
}

// The message of the ls::Error thrown by f ("" when f returns normally).
template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const ls::Error& e) {
    return e.what();
  }
  return std::string();
}

}  // namespace test
}  // namespace ls
