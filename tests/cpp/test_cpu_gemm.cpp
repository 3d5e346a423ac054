// CPU reference GEMM: forward semantics against a naive loop written here (transposes, padded
// leading dimensions, beta, batch strides), every epilogue through a two-layer MLP whose
// backward (built from gemm calls) must match finite differences, batched attention-style
// products against finite differences, fp32 against fp64, and argument validation.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "layers/kernels/backends.h"
#include "test_util.h"

using ls::DType;
using ls::Epilogue;
using ls::GemmArgs;
using namespace ls::test;

namespace {

// Central differences in double (see numeric_gradient): truncation and rounding stay near
// 1e-9 relative, so 1e-6 catches any wrong term while never failing on noise.
constexpr double kGradTol = 1e-6;

// Element (r, c) of op(X) for X stored row-major with leading dimension ld.
double op_at(const std::vector<double>& x, int64_t offset, int64_t ld, bool trans, int64_t r,
             int64_t c) {
  return trans ? x[offset + c * ld + r] : x[offset + r * ld + c];
}

GemmArgs plain_args(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void* a, const void* b,
                    void* c, DType t = DType::F64) {
  GemmArgs g;
  g.trans_a = ta;
  g.trans_b = tb;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = a;
  g.lda = ta ? m : k;
  g.b = b;
  g.ldb = tb ? k : n;
  g.c = c;
  g.ldc = n;
  g.ab_type = t;
  g.c_type = t;
  return g;
}

double relu_or_gelu(ls::Activation act, double x) {
  if (act == ls::Activation::ReLU) return x > 0 ? x : 0;
  return 0.5 * x *
         (1.0 + std::tanh(std::sqrt(2.0 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
}

}  // namespace

TEST_CASE("gemm matches a naive product for every transpose, padded ld, beta and batch") {
  auto ops = ls::make_cpu_ops();
  const int64_t m = 5, n = 4, k = 3, batch = 3, pad = 2;
  for (int trans = 0; trans < 4; ++trans) {
    const bool ta = trans & 1, tb = trans & 2;
    CAPTURE(ta);
    CAPTURE(tb);
    GemmArgs g;
    g.trans_a = ta;
    g.trans_b = tb;
    g.m = m;
    g.n = n;
    g.k = k;
    g.batch = batch;
    g.lda = (ta ? m : k) + pad;
    g.ldb = (tb ? k : n) + pad;
    g.ldc = n + pad;
    g.stride_a = (ta ? k : m) * g.lda + 1;  // gaps between the matrices of the batch
    g.stride_b = (tb ? n : k) * g.ldb + 3;
    g.stride_c = m * g.ldc;
    g.alpha = 0.5f;
    g.beta = 2.0f;
    g.ab_type = g.c_type = DType::F64;
    auto a = random_vector<double>(g.stride_a * batch, 1);
    auto b = random_vector<double>(g.stride_b * batch, 2);
    auto c = random_vector<double>(g.stride_c * batch, 3);
    std::vector<double> expected = c;
    for (int64_t s = 0; s < batch; ++s)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double sum = 0;
          for (int64_t p = 0; p < k; ++p)
            sum += op_at(a, s * g.stride_a, g.lda, ta, i, p) *
                   op_at(b, s * g.stride_b, g.ldb, tb, p, j);
          double& e = expected[s * g.stride_c + i * g.ldc + j];
          e = 0.5 * sum + 2.0 * e;
        }
    g.a = a.data();
    g.b = b.data();
    g.c = c.data();
    ops->gemm(g);
    // Same operations up to summation order: a few ulps of double.
    CHECK(rel_error(c, expected) < 1e-14);
  }
}

TEST_CASE("gemm with beta == 0 does not read C (NaN in C does not leak)") {
  auto ops = ls::make_cpu_ops();
  auto a = random_vector<double>(6, 4), b = random_vector<double>(6, 5);
  std::vector<double> c(4);
  poison(c);
  ops->gemm(plain_args(false, false, 2, 2, 3, a.data(), b.data(), c.data()));
  for (double x : c) CHECK(std::isfinite(x));
}

TEST_CASE("gemm with k == 0 gives beta * C") {
  auto ops = ls::make_cpu_ops();
  std::vector<double> c = {1.0, 2.0, 3.0, 4.0};
  GemmArgs g = plain_args(false, false, 2, 2, 0, nullptr, nullptr, c.data());
  g.lda = 1;
  g.beta = 0.5f;
  ops->gemm(g);
  CHECK(c == std::vector<double>{0.5, 1.0, 1.5, 2.0});
}

// A two-layer MLP written with the epilogues the layers use, in double:
//   forward   aux = X W1^T + b1, H = act(aux)        (BiasAct, trans_b)
//             Y = H W2^T + b2                        (Bias, trans_b)
//             loss = <G, Y>
//   backward  dW2 += G^T H, db2 += column sums of G  (BGradA, trans_a)
//             dAux = (G W2) * act'(aux), db1 += sums (DActBGrad)
//             dW1 += dAux^T X                        (None, trans_a, beta = 1: accumulate)
//             dX = dAux W1                           (None)
TEST_CASE("gemm epilogues: MLP backward built from gemm calls matches finite differences") {
  auto ops = ls::make_cpu_ops();
  const int64_t rows = 5, d_in = 4, d_hidden = 6, d_out = 3;
  for (ls::Activation act : {ls::Activation::ReLU, ls::Activation::GELU}) {
    CAPTURE(static_cast<int>(act));
    auto x = random_vector<double>(rows * d_in, 10);
    auto w1 = random_vector<double>(d_hidden * d_in, 11);
    auto b1 = random_vector<double>(d_hidden, 12);
    auto w2 = random_vector<double>(d_out * d_hidden, 13);
    auto b2 = random_vector<double>(d_out, 14);
    const auto grad_y = random_vector<double>(rows * d_out, 15);

    std::vector<double> aux(rows * d_hidden), h(rows * d_hidden), y(rows * d_out);
    auto forward = [&]() {
      GemmArgs g1 = plain_args(false, true, rows, d_hidden, d_in, x.data(), w1.data(), h.data());
      g1.epilogue = Epilogue::BiasAct;
      g1.act = act;
      g1.bias = b1.data();
      g1.aux = aux.data();
      ops->gemm(g1);
      GemmArgs g2 = plain_args(false, true, rows, d_out, d_hidden, h.data(), w2.data(), y.data());
      g2.epilogue = Epilogue::Bias;
      g2.bias = b2.data();
      ops->gemm(g2);
      return dot(grad_y, y);
    };
    forward();
    // The epilogue's outputs themselves, against the formula.
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < d_hidden; ++j) {
        double pre = b1[j];
        for (int64_t p = 0; p < d_in; ++p) pre += x[r * d_in + p] * w1[j * d_in + p];
        CHECK(aux[r * d_hidden + j] == doctest::Approx(pre).epsilon(1e-13));
        CHECK(h[r * d_hidden + j] == doctest::Approx(relu_or_gelu(act, pre)).epsilon(1e-13));
      }
    // ReLU's kink: finite differences are only valid when no pre-activation is near 0.
    for (double p : aux) REQUIRE(std::fabs(p) > 1e-4);

    // Parameter gradients accumulate: start them at a known non-zero value.
    const double start = 0.25;
    std::vector<double> dw1(w1.size(), start), db1(b1.size(), start);
    std::vector<double> dw2(w2.size(), start), db2(b2.size(), start);
    std::vector<double> daux(rows * d_hidden), dx(rows * d_in);

    GemmArgs gw2 =
        plain_args(true, false, d_out, d_hidden, rows, grad_y.data(), h.data(), dw2.data());
    gw2.beta = 1.f;
    gw2.epilogue = Epilogue::BGradA;
    gw2.bias_grad = db2.data();
    ops->gemm(gw2);
    GemmArgs gh =
        plain_args(false, false, rows, d_hidden, d_out, grad_y.data(), w2.data(), daux.data());
    gh.epilogue = Epilogue::DActBGrad;
    gh.act = act;
    gh.aux = aux.data();
    gh.bias_grad = db1.data();
    ops->gemm(gh);
    GemmArgs gw1 = plain_args(true, false, d_hidden, d_in, rows, daux.data(), x.data(), dw1.data());
    gw1.beta = 1.f;
    ops->gemm(gw1);
    ops->gemm(plain_args(false, false, rows, d_in, d_hidden, daux.data(), w1.data(), dx.data()));

    auto minus_start = [&](std::vector<double> v) {
      for (auto& e : v) e -= start;
      return v;
    };
    CHECK(gradient_error(x, forward, dx) < kGradTol);
    CHECK(gradient_error(w1, forward, minus_start(dw1)) < kGradTol);
    CHECK(gradient_error(b1, forward, minus_start(db1)) < kGradTol);
    CHECK(gradient_error(w2, forward, minus_start(dw2)) < kGradTol);
    CHECK(gradient_error(b2, forward, minus_start(db2)) < kGradTol);
  }
}

// Batched products as attention uses them: S_b = alpha Q_b K_b^T, loss = <G, S>;
// dQ_b = alpha G_b K_b, dK_b = alpha G_b^T Q_b (batch strides, trans_b then trans_a).
TEST_CASE("batched gemm: attention-style products and their adjoints match finite differences") {
  auto ops = ls::make_cpu_ops();
  const int64_t batch = 3, lq = 4, lk = 5, d = 3;
  const float alpha = 0.5f;
  auto q = random_vector<double>(batch * lq * d, 20);
  auto kmat = random_vector<double>(batch * lk * d, 21);
  const auto grad_s = random_vector<double>(batch * lq * lk, 22);
  std::vector<double> s(batch * lq * lk);

  auto batched = [&](bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double* a,
                     const double* b, double* c) {
    GemmArgs g = plain_args(ta, tb, m, n, k, a, b, c);
    g.alpha = alpha;
    g.batch = batch;
    g.stride_a = m * k;
    g.stride_b = k * n;
    g.stride_c = m * n;
    ops->gemm(g);
  };
  auto forward = [&]() {
    batched(false, true, lq, lk, d, q.data(), kmat.data(), s.data());
    return dot(grad_s, s);
  };
  std::vector<double> dq(q.size()), dk(kmat.size());
  batched(false, false, lq, d, lk, grad_s.data(), kmat.data(), dq.data());
  batched(true, false, lk, d, lq, grad_s.data(), q.data(), dk.data());
  CHECK(gradient_error(q, forward, dq) < kGradTol);
  CHECK(gradient_error(kmat, forward, dk) < kGradTol);
}

TEST_CASE("gemm in fp32 agrees with fp64") {
  auto ops = ls::make_cpu_ops();
  const int64_t m = 7, n = 9, k = 64;
  const auto a = random_vector<double>(m * k, 30), b = random_vector<double>(n * k, 31);
  const auto bias = random_vector<double>(n, 32);
  std::vector<double> c64(m * n), aux64(m * n);
  std::vector<float> c32(m * n), aux32(m * n);
  const auto a32 = convert<float>(a), b32 = convert<float>(b), bias32 = convert<float>(bias);

  GemmArgs g = plain_args(false, true, m, n, k, a.data(), b.data(), c64.data());
  g.epilogue = Epilogue::BiasAct;
  g.act = ls::Activation::GELU;
  g.bias = bias.data();
  g.aux = aux64.data();
  ops->gemm(g);
  g = plain_args(false, true, m, n, k, a32.data(), b32.data(), c32.data(), DType::F32);
  g.epilogue = Epilogue::BiasAct;
  g.act = ls::Activation::GELU;
  g.bias = bias32.data();
  g.aux = aux32.data();
  ops->gemm(g);
  // fp32 rounding (u = 6e-8) of the inputs plus a k = 64 long dot product: worst case ~k u =
  // 4e-6 relative per element, typically far less.
  CHECK(rel_error(aux32, aux64) < 1e-5);
  CHECK(rel_error(c32, c64) < 1e-5);
}

TEST_CASE("gemm rejects bad arguments") {
  auto ops = ls::make_cpu_ops();
  std::vector<double> a(6, 1.0), b(6, 1.0), c(4, 0.0), bias(2, 0.0);
  const GemmArgs ok = plain_args(false, false, 2, 2, 3, a.data(), b.data(), c.data());
  ops->gemm(ok);

  auto status = [&](GemmArgs g) { return status_of([&] { ops->gemm(g); }); };
  GemmArgs g = ok;
  g.a = nullptr;
  CHECK(status(g) == LS_ERR_INVALID_ARGUMENT);
  g = ok;
  g.c = nullptr;
  CHECK(status(g) == LS_ERR_INVALID_ARGUMENT);
  g = ok;
  g.m = -1;
  CHECK(status(g) == LS_ERR_INVALID_ARGUMENT);
  g = ok;
  g.lda = 2;  // A is [2, 3]
  CHECK(status(g) == LS_ERR_INVALID_ARGUMENT);
  g = ok;
  g.ldc = 1;
  CHECK(status(g) == LS_ERR_INVALID_ARGUMENT);
  g = ok;
  g.epilogue = Epilogue::Bias;
  g.bias = bias.data();
  g.beta = 1.f;  // Bias overwrites C: beta must be 0
  CHECK(status(g) == LS_ERR_INVALID_ARGUMENT);
  g.beta = 0.f;
  g.bias = nullptr;
  CHECK(status(g) == LS_ERR_INVALID_ARGUMENT);
  g = ok;
  g.epilogue = Epilogue::DActBGrad;  // needs aux and bias_grad
  CHECK(status(g) == LS_ERR_INVALID_ARGUMENT);
  g = ok;
  g.ab_type = g.c_type = DType::F16;
  CHECK(status(g) == LS_ERR_UNSUPPORTED);
  CHECK(error_message([&] { ops->gemm(g); }).find("gemm") != std::string::npos);
}
