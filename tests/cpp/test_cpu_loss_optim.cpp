// CPU reference criterion and optimizer: label-smoothed cross-entropy against numbers computed
// by hand (independently, in Python) and its backward against finite differences of the loss;
// Adam / AdamW against two hand-computed steps; the skip flag; sum_squares; cast; add_inplace.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "layers/kernels/backends.h"
#include "test_util.h"

using ls::DType;
using ls::Ops;
using namespace ls::test;

namespace {

// Central differences in double (see numeric_gradient): 1e-6 relative is far above their error.
constexpr double kGradTol = 1e-6;

}  // namespace

// ---------------------------------------------------------------- cross-entropy

TEST_CASE("cross_entropy forward on a hand-computed V = 4 case") {
  auto ops = ls::make_cpu_ops();
  const int64_t vocab = 4;
  const int32_t pad = 1;
  const float eps = 0.25f;  // exact in fp32, so the hand numbers need no rounding
  const std::vector<double> logits = {1.0,  2.0,  3.0, 4.0,   // target 2
                                      -3.0, 0.25, 1.5, 0.0,   // padding target: not counted
                                      0.5,  -1.0, 0.0, 2.0};  // target 0
  const std::vector<int32_t> targets = {2, pad, 0};
  std::vector<double> lse(3);
  std::vector<double> sums = {10.0, 20.0, 30.0};  // accumulates
  ops->cross_entropy_forward(logits.data(), targets.data(), lse.data(), sums.data(), 3, vocab, pad,
                             eps, DType::F64);
  // lse = log(sum exp), nll = lse - z_y, smooth = V lse - sum z,
  // loss = (1 - eps - eps/3) nll + eps/3 smooth.
  CHECK(lse[0] == doctest::Approx(4.4401896985611957).epsilon(1e-15));
  CHECK(lse[1] == doctest::Approx(1.9191996582429038).epsilon(1e-15));
  CHECK(lse[2] == doctest::Approx(2.3423495823898222).epsilon(1e-15));
  CHECK(sums[0] == doctest::Approx(10.0 + 1.6068563652278622 + 1.8840162490564887).epsilon(1e-15));
  CHECK(sums[1] == doctest::Approx(20.0 + 1.4401896985611957 + 1.8423495823898222).epsilon(1e-15));
  CHECK(sums[2] == 32.0);
}

TEST_CASE("cross_entropy backward matches finite differences of the loss; padding rows are 0") {
  auto ops = ls::make_cpu_ops();
  const int64_t rows = 5, vocab = 7;
  const int32_t pad = 1;
  const float eps = 0.1f;
  auto logits = random_vector<double>(rows * vocab, 300, -3, 3);
  const std::vector<int32_t> targets = {4, pad, 0, 6, pad};
  std::vector<double> lse(rows), sums(3);
  auto loss = [&]() {
    sums = {0.0, 0.0, 0.0};
    ops->cross_entropy_forward(logits.data(), targets.data(), lse.data(), sums.data(), rows, vocab,
                               pad, eps, DType::F64);
    return sums[0];
  };
  loss();
  const double one = 1.0, three = 3.0;
  std::vector<double> d_logits(rows * vocab), d_scaled(rows * vocab);
  poison(d_logits);
  ops->cross_entropy_backward(logits.data(), targets.data(), lse.data(), &one, d_logits.data(),
                              rows, vocab, pad, eps, DType::F64);
  CHECK(gradient_error(logits, loss, d_logits) < kGradTol);
  for (int64_t t : {1, 4})
    for (int64_t v = 0; v < vocab; ++v) CHECK(d_logits[t * vocab + v] == 0.0);
  // The gradient scale multiplies every element (the loss scale for fp16).
  ops->cross_entropy_backward(logits.data(), targets.data(), lse.data(), &three, d_scaled.data(),
                              rows, vocab, pad, eps, DType::F64);
  for (size_t i = 0; i < d_logits.size(); ++i)
    CHECK(d_scaled[i] == doctest::Approx(3.0 * d_logits[i]).epsilon(1e-15));
  // d_logits may overwrite logits (the criterion's in-place backward).
  std::vector<double> in_place = logits;
  ops->cross_entropy_backward(in_place.data(), targets.data(), lse.data(), &one, in_place.data(),
                              rows, vocab, pad, eps, DType::F64);
  CHECK(in_place == d_logits);
  // Forward and backward in one call (training's criterion), in place: the same lse, sums and
  // gradient as the two calls.
  std::vector<double> fused = logits, fused_lse(rows), fused_sums = {0.0, 0.0, 0.0};
  ops->cross_entropy_forward_backward(fused.data(), targets.data(), fused_lse.data(),
                                      fused_sums.data(), &one, fused.data(), rows, vocab, pad, eps,
                                      DType::F64);
  loss();
  CHECK(fused_lse == lse);
  CHECK(fused_sums == sums);
  CHECK(fused == d_logits);
}

TEST_CASE("cross_entropy in fp32 agrees with fp64") {
  auto ops = ls::make_cpu_ops();
  const int64_t rows = 6, vocab = 50;
  const int32_t pad = 0;
  const auto logits = random_vector<double>(rows * vocab, 310, -4, 4);
  const auto targets = random_tokens(rows, vocab, 311);
  std::vector<double> lse(rows), sums(3, 0.0), d(rows * vocab);
  const double scale = 1.0;
  ops->cross_entropy_forward(logits.data(), targets.data(), lse.data(), sums.data(), rows, vocab,
                             pad, 0.1f, DType::F64);
  ops->cross_entropy_backward(logits.data(), targets.data(), lse.data(), &scale, d.data(), rows,
                              vocab, pad, 0.1f, DType::F64);
  const auto logits32 = convert<float>(logits);
  std::vector<float> lse32(rows), sums32(3, 0.f), d32(rows * vocab);
  const float scale32 = 1.f;
  ops->cross_entropy_forward(logits32.data(), targets.data(), lse32.data(), sums32.data(), rows,
                             vocab, pad, 0.1f, DType::F32);
  ops->cross_entropy_backward(logits32.data(), targets.data(), lse32.data(), &scale32, d32.data(),
                              rows, vocab, pad, 0.1f, DType::F32);
  // fp32 rounding of logits up to |4| and 50-term sums: ~50 u = 3e-6 relative at worst.
  CHECK(rel_error(lse32, lse) < 1e-5);
  CHECK(rel_error(sums32, sums) < 1e-5);
  CHECK(rel_error(d32, d) < 1e-5);
}

TEST_CASE("cross_entropy rejects bad targets and arguments") {
  auto ops = ls::make_cpu_ops();
  std::vector<double> logits(8, 0.0), lse(2), sums(3, 0.0);
  std::vector<int32_t> targets = {0, 4};  // 4 >= vocab
  CHECK(status_of([&] {
          ops->cross_entropy_forward(logits.data(), targets.data(), lse.data(), sums.data(), 2, 4,
                                     1, 0.1f, DType::F64);
        }) == LS_ERR_INVALID_ARGUMENT);
  CHECK(sums == std::vector<double>{0.0, 0.0, 0.0});
  targets = {0, 1};
  CHECK(status_of([&] {
          ops->cross_entropy_forward(logits.data(), targets.data(), lse.data(), sums.data(), 2, 1,
                                     1, 0.1f, DType::F64);
        }) == LS_ERR_INVALID_ARGUMENT);  // vocab 1: eps / (V - 1) undefined
  CHECK(status_of([&] {
          ops->cross_entropy_forward(logits.data(), targets.data(), lse.data(), nullptr, 2, 4, 1,
                                     0.1f, DType::F64);
        }) == LS_ERR_INVALID_ARGUMENT);
}

// ---------------------------------------------------------------- Adam

namespace {

// Hyperparameters exact in fp32 (AdamArgs holds floats), so the hand-computed numbers below,
// computed in double in Python from the formula of ops.h, apply without rounding questions.
Ops::AdamArgs adam_args(bool decoupled) {
  Ops::AdamArgs h;
  h.beta1 = 0.875f;
  h.beta2 = 0.9921875f;
  h.eps = 0x1p-20f;
  h.weight_decay = 0.0625f;
  h.decoupled = decoupled;
  return h;
}

// The per-update values the optimizer reads from memory (update_control writes them).
ls::AdamStep adam_step(int step, double mult, int32_t skip = 0) {
  ls::AdamStep s;
  s.mult = mult;
  s.lr = 0.125;
  s.bias1 = 1.0 - std::pow(0.875, step);
  s.bias2 = 1.0 - std::pow(0.9921875, step);
  s.skip = skip;
  return s;
}

struct AdamState {
  std::vector<double> p = {1.0, -0.5, 0.0}, m = {0, 0, 0}, v = {0, 0, 0};
};

}  // namespace

TEST_CASE("adam_update matches two hand-computed steps (Adam with L2, AdamW)") {
  auto ops = ls::make_cpu_ops();
  const std::vector<std::vector<double>> grads = {{0.5, 0.25, -1.0}, {-0.25, 0.125, 0.375}};
  const double grad_mult = 2.0;  // e.g. 1 / loss scale
  struct Expected {
    std::vector<double> p, m, v;
  };
  // [decoupled][step]
  const Expected expected[2][2] = {
      {{{0.87500011219687768, -0.62499974568736638, 0.12499994039538365},
        {0.1328125, 0.05859375, -0.25},
        {0.008819580078125, 0.00171661376953125, 0.03125}},
       {{0.83530535663296468, -0.73906711595292474, 0.1688020001383386},
        {0.060546875876538106, 0.077636720736817447, -0.12402343796566107},
        {0.010299920986974929, 0.0020508170651736555, 0.035492420152422731}}},
      {{{0.86718761920917586, -0.62109351158187565, 0.12499994039538365},
        {0.125, 0.0625, -0.25},
        {0.0078125, 0.001953125, 0.03125}},
       {{0.82875270852090588, -0.73232777216942346, 0.16822768264538854},
        {0.046875, 0.0859375, -0.125},
        {0.00970458984375, 0.0024261474609375, 0.035400390625}}}};
  for (int decoupled = 0; decoupled < 2; ++decoupled) {
    CAPTURE(decoupled);
    AdamState s;
    std::vector<float> work(3);
    for (int step = 1; step <= 2; ++step) {
      CAPTURE(step);
      const ls::AdamStep st = adam_step(step, grad_mult);
      ops->adam_update(s.p.data(), grads[step - 1].data(), s.m.data(), s.v.data(), work.data(),
                       DType::F32, 3, adam_args(decoupled), &st, DType::F64);
      const Expected& e = expected[decoupled][step - 1];
      // Same formula, possibly another operation order: a few ulps of double.
      CHECK(rel_error(s.p, e.p) < 1e-14);
      CHECK(rel_error(s.m, e.m) < 1e-14);
      CHECK(rel_error(s.v, e.v) < 1e-14);
      for (int i = 0; i < 3; ++i) CHECK(work[i] == static_cast<float>(s.p[i]));
    }
  }
}

TEST_CASE("adam_update with the skip flag set leaves every buffer bitwise unchanged") {
  auto ops = ls::make_cpu_ops();
  AdamState s;
  s.m = {0.1, -0.2, 0.3};
  s.v = {0.01, 0.02, 0.03};
  const AdamState before = s;
  const std::vector<double> grads = {std::numeric_limits<double>::infinity(), 1.0,
                                     std::numeric_limits<double>::quiet_NaN()};
  std::vector<double> work = {7.0, 8.0, 9.0};
  const ls::AdamStep skip = adam_step(1, 1.0, 1);
  ops->adam_update(s.p.data(), grads.data(), s.m.data(), s.v.data(), work.data(), DType::F64, 3,
                   adam_args(true), &skip, DType::F64);
  CHECK(std::memcmp(s.p.data(), before.p.data(), 3 * sizeof(double)) == 0);
  CHECK(std::memcmp(s.m.data(), before.m.data(), 3 * sizeof(double)) == 0);
  CHECK(std::memcmp(s.v.data(), before.v.data(), 3 * sizeof(double)) == 0);
  CHECK(work == std::vector<double>{7.0, 8.0, 9.0});
  // skip == 0 updates.
  const ls::AdamStep no_skip = adam_step(1, 1.0, 0);
  const std::vector<double> finite = {1.0, 1.0, 1.0};
  ops->adam_update(s.p.data(), finite.data(), s.m.data(), s.v.data(), nullptr, DType::F64, 3,
                   adam_args(true), &no_skip, DType::F64);
  CHECK(s.p != before.p);
}

TEST_CASE("adam_update in fp32 agrees with fp64") {
  auto ops = ls::make_cpu_ops();
  const size_t n = 100;
  auto p = random_vector<double>(n, 320), m = random_vector<double>(n, 321, -0.1, 0.1);
  auto v = random_vector<double>(n, 322, 0.001, 0.01);
  const auto g = random_vector<double>(n, 323);
  auto p32 = convert<float>(p), m32 = convert<float>(m), v32 = convert<float>(v);
  const auto g32 = convert<float>(g);
  const ls::AdamStep st = adam_step(3, 0.5);
  ops->adam_update(p.data(), g.data(), m.data(), v.data(), nullptr, DType::F64, n,
                   adam_args(true), &st, DType::F64);
  ops->adam_update(p32.data(), g32.data(), m32.data(), v32.data(), nullptr, DType::F32, n,
                   adam_args(true), &st, DType::F32);
  // A handful of fp32 operations per element on fp32-rounded inputs: ~10 u = 6e-7.
  CHECK(rel_error(p32, p) < 1e-6);
  CHECK(rel_error(m32, m) < 1e-6);
  CHECK(rel_error(v32, v) < 1e-6);
}

TEST_CASE("adam_update rejects null buffers and unsupported types") {
  auto ops = ls::make_cpu_ops();
  AdamState s;
  const std::vector<double> g = {1, 1, 1};
  const ls::AdamStep st = adam_step(1, 1.0);
  CHECK(status_of([&] {
          ops->adam_update(s.p.data(), g.data(), s.m.data(), nullptr, nullptr, DType::F64, 3,
                           adam_args(false), &st, DType::F64);
        }) == LS_ERR_INVALID_ARGUMENT);
  CHECK(status_of([&] {
          ops->adam_update(s.p.data(), g.data(), s.m.data(), s.v.data(), nullptr, DType::F64, 3,
                           adam_args(false), nullptr, DType::F64);
        }) == LS_ERR_INVALID_ARGUMENT);
  std::vector<uint16_t> half(3);
  CHECK(status_of([&] {
          ops->adam_update(s.p.data(), g.data(), s.m.data(), s.v.data(), half.data(), DType::F16, 3,
                           adam_args(false), &st, DType::F64);
        }) == LS_ERR_UNSUPPORTED);
}

// ---------------------------------------------------------------- reductions and memory

TEST_CASE("sum_squares accumulates and propagates inf/NaN") {
  auto ops = ls::make_cpu_ops();
  const std::vector<double> x = {1.0, -2.0, 3.0};
  double out = 0.5;
  ops->sum_squares(x.data(), x.size(), &out, DType::F64);
  CHECK(out == 14.5);
  const std::vector<float> bad = {1.f, std::numeric_limits<float>::infinity()};
  float out32 = 0.f;
  ops->sum_squares(bad.data(), bad.size(), &out32, DType::F32);
  CHECK(std::isinf(out32));
  const std::vector<float> nan = {std::numeric_limits<float>::quiet_NaN(), 1.f};
  out32 = 0.f;
  ops->sum_squares(nan.data(), nan.size(), &out32, DType::F32);
  CHECK(std::isnan(out32));
}

TEST_CASE("cast between fp32 and fp64, add_inplace, memory copies") {
  auto ops = ls::make_cpu_ops();
  const std::vector<double> x = {1.0 / 3.0, -2.5, 1e-40};
  std::vector<float> f(3);
  ops->cast(x.data(), DType::F64, f.data(), DType::F32, 3);
  for (int i = 0; i < 3; ++i) CHECK(f[i] == static_cast<float>(x[i]));
  std::vector<double> back(3);
  ops->cast(f.data(), DType::F32, back.data(), DType::F64, 3);
  for (int i = 0; i < 3; ++i) CHECK(back[i] == static_cast<double>(f[i]));
  std::vector<uint16_t> half(3);
  CHECK(status_of([&] { ops->cast(f.data(), DType::F32, half.data(), DType::F16, 3); }) ==
        LS_ERR_UNSUPPORTED);

  std::vector<double> y = {1.0, 2.0, 3.0};
  ops->add_inplace(y.data(), x.data(), DType::F64, 3);
  CHECK(y == std::vector<double>{1.0 + 1.0 / 3.0, -0.5, 3.0 + 1e-40});

  std::vector<double> dst(3);
  ops->copy(dst.data(), x.data(), 3 * sizeof(double));
  CHECK(dst == x);
  ops->zero(dst.data(), 3 * sizeof(double));
  CHECK(dst == std::vector<double>{0, 0, 0});
  ops->from_host(dst.data(), x.data(), 3 * sizeof(double));
  CHECK(dst == x);
  CHECK(status_of([&] { ops->copy(nullptr, x.data(), 8); }) == LS_ERR_INVALID_ARGUMENT);
  CHECK_FALSE(ops->is_cuda());
}
