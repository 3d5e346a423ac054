// The per-update control (layers/kernels/train_control.h) through the CPU backend's
// update_control, chained with adam_update exactly as the trainer chains them: an injected inf
// gradient skips the update (weights and moments bitwise unchanged), halves the scale, and the
// scale grows after the interval; the minimum-scale stop; bf16/fp32 stop on a non-finite
// norm; clipping; the learning-rate schedule and Adam's bias corrections; out-of-range device
// tokens skip the update.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "layers/kernels/backends.h"
#include "runtime/trainer.h"

using ls::AdamStep;
using ls::DType;
using ls::Ops;
using ls::TrainState;
using ls::UpdateControlArgs;

namespace {

struct Flat {
  std::vector<double> p, g, m, v;
  explicit Flat(size_t n) : p(n), g(n), m(n), v(n) {
    for (size_t i = 0; i < n; ++i) {
      p[i] = 0.1 * std::sin(1.0 + i);
      g[i] = std::cos(2.0 + i);
      m[i] = 0.01 * i;
      v[i] = 0.001 * (i + 1);
    }
  }
};

// One update as the trainer runs it: sum of squares, control, Adam (fp64 on the CPU).
struct Updater {
  std::unique_ptr<Ops> ops = ls::make_cpu_ops();
  UpdateControlArgs args;
  TrainState state;
  Ops::AdamArgs adam;
  double grad_scale = 0;
  double tokens = 0;
  void run(Flat& f, double step_tokens) {
    double sumsq = 0;
    ops->sum_squares(f.g.data(), f.g.size(), &sumsq, DType::F64);
    tokens += step_tokens;
    ops->update_control(&sumsq, &tokens, args, &state, &grad_scale, DType::F64);
    CHECK(tokens == 0);  // consumed
    ops->adam_update(f.p.data(), f.g.data(), f.m.data(), f.v.data(), nullptr, DType::F64,
                     f.p.size(), adam, &state.step, DType::F64);
  }
};

bool same(const std::vector<double>& a, const std::vector<double>& b) {
  return std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

}  // namespace

TEST_CASE("an injected inf gradient skips the update, halves the scale; the scale grows after "
          "the interval") {
  Updater u;
  u.args.scaling = 1;
  u.args.interval = 3;
  u.args.schedule = ls::kLrConstant;
  u.args.peak_lr = 1e-3;
  u.state.loss_scale = 65536;
  Flat f(50);
  f.g[17] = std::numeric_limits<double>::infinity();
  const Flat before = f;
  u.run(f, 100);
  CHECK(u.state.overflow == 1);
  CHECK(u.state.updated == 0);
  CHECK(u.state.step.skip == 1);
  CHECK(u.state.num_updates == 0);
  CHECK(u.state.overflows == 1);
  CHECK(u.state.loss_scale == 32768);
  CHECK(u.grad_scale == 32768);  // what the next backward multiplies by
  CHECK(same(f.p, before.p));
  CHECK(same(f.m, before.m));
  CHECK(same(f.v, before.v));
  // NaN too.
  f.g[17] = std::numeric_limits<double>::quiet_NaN();
  u.run(f, 100);
  CHECK(u.state.overflow == 1);
  CHECK(u.state.loss_scale == 16384);
  CHECK(same(f.p, before.p));
  // Clean updates: after `interval` of them the scale doubles.
  f.g[17] = 0.5;
  for (int i = 1; i <= 3; ++i) {
    CAPTURE(i);
    u.run(f, 100);
    CHECK(u.state.updated == 1);
    CHECK(u.state.num_updates == i);
    CHECK(u.state.loss_scale == (i < 3 ? 16384 : 32768));
  }
  CHECK_FALSE(same(f.p, before.p));
  CHECK(u.state.good_steps == 0);
}

TEST_CASE("a scale below loss_scale_min stops training; later updates are all skipped") {
  Updater u;
  u.args.scaling = 1;
  u.args.min_scale = 1.0;
  u.state.loss_scale = 4;
  Flat f(10);
  f.g[0] = std::numeric_limits<double>::infinity();
  u.run(f, 10);  // 2
  u.run(f, 10);  // 1
  CHECK(u.state.stopped == ls::kStopNone);
  u.run(f, 10);  // 0.5 < 1: stop
  CHECK(u.state.stopped == ls::kStopScaleBelowMin);
  CHECK(u.state.stop_value == 0.5);
  const Flat before = f;
  f.g[0] = 1.0;  // even a clean gradient no longer updates
  u.run(f, 10);
  CHECK(u.state.step.skip == 1);
  CHECK(u.state.updated == 0);
  CHECK(same(f.p, before.p));
}

TEST_CASE("without loss scaling a non-finite gradient stops training") {
  Updater u;
  u.args.scaling = 0;
  u.state.loss_scale = 1;
  Flat f(10);
  const Flat before = f;
  f.g[3] = -std::numeric_limits<double>::infinity();
  u.run(f, 10);
  CHECK(u.state.stopped == ls::kStopNonFinite);
  CHECK(u.state.loss_scale == 1);
  CHECK(same(f.p, before.p));
}

TEST_CASE("clipping, unscaling, learning-rate schedule and bias corrections") {
  Updater u;
  u.args.scaling = 1;
  u.args.clip_norm = 0.005;
  u.args.schedule = ls::kLrInverseSqrt;
  u.args.peak_lr = 5e-4;
  u.args.warmup = 4;
  u.args.warmup_init_lr = 1e-7;
  u.args.beta1 = 0.9;
  u.args.beta2 = 0.98;
  u.state.loss_scale = 8;
  Flat f(20);
  double sumsq = 0;
  for (double g : f.g) sumsq += g * g;
  const double norm = std::sqrt(sumsq) / (8 * 50);
  REQUIRE(norm > 0.005);  // clipping applies
  ls_trainer_config c;
  c.struct_size = sizeof(c);
  ls::trainer_config_defaults(c);
  c.lr = 5e-4f;
  c.warmup_updates = 4;
  c.warmup_init_lr = 1e-7f;
  for (int k = 0; k < 6; ++k) {
    CAPTURE(k);
    u.run(f, 50);
    CHECK(u.state.grad_norm == doctest::Approx(norm).epsilon(1e-12));
    CHECK(u.state.step.mult == doctest::Approx(1.0 / (8 * 50) * 0.005 / (norm + 1e-6)).epsilon(1e-12));
    CHECK(u.state.step.lr == doctest::Approx(ls::learning_rate(c, k)).epsilon(1e-6));
    CHECK(u.state.step.bias1 == doctest::Approx(1 - std::pow(0.9, k + 1)).epsilon(1e-12));
    CHECK(u.state.step.bias2 == doctest::Approx(1 - std::pow(0.98, k + 1)).epsilon(1e-12));
  }
  CHECK(u.state.num_updates == 6);
}

TEST_CASE("out-of-range device token ids skip the update and are counted") {
  Updater u;
  Flat f(10);
  const Flat before = f;
  std::vector<int32_t> src = {3, 70, -1, 5}, dst(4, 99);
  u.ops->import_tokens(src.data(), dst.data(), 4, 64, 1, &u.state.bad_tokens);
  CHECK(dst == std::vector<int32_t>{3, 1, 1, 5});
  CHECK(u.state.bad_tokens == 2);
  u.run(f, 10);
  CHECK(u.state.bad_batch == 1);
  CHECK(u.state.bad_updates == 1);
  CHECK(u.state.bad_tokens == 0);
  CHECK(u.state.updated == 0);
  CHECK(same(f.p, before.p));
  u.run(f, 10);  // the next clean update goes through
  CHECK(u.state.updated == 1);
  std::vector<uint8_t> mask(4);
  u.ops->padding_mask(dst.data(), mask.data(), 4, 1);
  CHECK(mask == std::vector<uint8_t>{0, 1, 1, 0});
}
