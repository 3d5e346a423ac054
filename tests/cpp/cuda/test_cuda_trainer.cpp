// The GPU trainer through the C API: dynamic loss scaling with an injected overflow (the step is
// skipped, the scale halves, weights/moments/step count are bitwise unchanged, the scale grows
// after the interval), the minimum-scale stop, asynchronous steps (no result: no read-back),
// CUDA-graph replay against eager steps, token arrays given in device memory (validated on
// the device), and an Ops decorator (bench/cuda/timed_ops.h) put in front of the backend through
// the internal Context::wrap_ops: it sees the model's and trainer's calls and changes nothing.
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/cuda/timed_ops.h"
#include "capi/handles.h"
#include "cuda_model_fixture.h"
#include "ls_train.h"

namespace {

using lstest::small_model_config;

// A CUDA context (seed 5), the model and a trainer of the given config.
struct Setup : lstest::Run {
  Setup(const ls_model_config& c, const ls_trainer_config& t)
      : lstest::Run(LS_DEVICE_CUDA, c, t, 5) {}
};

ls_trainer_config trainer_config() {
  return lstest::constant_lr_trainer_config(1e-3f);
}

// B rows of decreasing lengths (source Ls - 2r, target Lt - r), padded; salt varies the ids.
struct Batch : lstest::PaddedBatch {
  explicit Batch(int B = 6, int Ls = 21, int Lt = 17, int salt = 0)
      : PaddedBatch(B, Ls, Lt, /*src_shrink=*/2, /*tgt_shrink=*/1, salt) {}
};

// Token arrays copied to device memory.
struct DeviceBatch {
  int32_t* src = nullptr;
  int32_t* prev = nullptr;
  int32_t* tgt = nullptr;
  ls_batch b;
  explicit DeviceBatch(const Batch& h) {
    auto up = [](const std::vector<int32_t>& v) {
      int32_t* p = nullptr;
      REQUIRE(cudaMalloc(&p, v.size() * sizeof(int32_t)) == cudaSuccess);
      REQUIRE(cudaMemcpy(p, v.data(), v.size() * sizeof(int32_t), cudaMemcpyHostToDevice) ==
              cudaSuccess);
      return p;
    };
    src = up(h.src);
    prev = up(h.prev);
    tgt = up(h.tgt);
    b = h.b;
    b.src_tokens = src;
    b.prev_output_tokens = prev;
    b.target = tgt;
    b.tokens_on_device = 1;
  }
  ~DeviceBatch() {
    cudaFree(src);
    cudaFree(prev);
    cudaFree(tgt);
  }
};

ls_step_result step(lstest::Run& s, const ls_batch& b, ls_status expect = LS_OK) {
  ls_step_result r;
  ls_step_result_init(&r);
  ls_status st = ls_trainer_step(s.trainer, &b, &r);
  REQUIRE_MESSAGE(st == expect, ls_last_error());
  return r;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0)
    return true;
  // Say how far apart they are (diagnostics for a failing CHECK).
  size_t differ = 0, first = a.size();
  double worst = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      ++differ;
      if (first == a.size()) first = i;
      worst = std::max(worst, std::fabs(double(a[i]) - double(b[i])));
    }
  MESSAGE(differ << " of " << a.size() << " values differ (first at " << first
                 << "), largest difference " << worst);
  return false;
}

}  // namespace

TEST_CASE(
    "fp16: an overflowing gradient skips the update, halves the scale, and the scale grows "
    "after the interval") {
  ls_trainer_config t = trainer_config();
  // 2^40: the scaled logit gradients overflow fp16 (max 65504) for sure: a real injected inf.
  t.loss_scale_init = 1099511627776.f;
  t.loss_scale_interval = 3;
  Setup s(small_model_config(LS_DTYPE_FP16), t);
  Batch batch;
  const std::vector<float> before = s.params();
  ls_step_result r = step(s, batch.b);
  CHECK(r.overflow == 1);
  CHECK(r.updated == 0);
  CHECK(r.num_updates == 0);
  CHECK(r.loss_scale == 549755813888.0);  // 2^39
  CHECK(std::isfinite(r.loss));           // the forward is unaffected
  CHECK(bitwise_equal(s.params(), before));
  // Keep stepping: the scale halves on each overflow until the gradients fit.
  int overflows = 1;
  while (r.updated == 0) {
    const std::vector<float> w = s.params();
    r = step(s, batch.b);
    if (r.overflow) {
      ++overflows;
      CHECK(bitwise_equal(s.params(), w));
    }
    REQUIRE(overflows < 40);
  }
  MESSAGE(overflows << " overflowing steps; first clean scale " << r.loss_scale);
  CHECK(r.num_updates == 1);
  CHECK_FALSE(bitwise_equal(s.params(), before));
  const double clean_scale = r.loss_scale;
  CHECK(clean_scale == std::ldexp(1.0, 40 - overflows));
  // Two more clean updates complete the interval of 3: the scale doubles.
  r = step(s, batch.b);
  REQUIRE(r.updated == 1);
  CHECK(r.loss_scale == clean_scale);
  r = step(s, batch.b);
  if (r.updated == 1) CHECK(r.loss_scale == 2 * clean_scale);
}

TEST_CASE(
    "fp16: a loss scale below loss_scale_min stops training with LS_ERR_NUMERIC, state "
    "untouched") {
  ls_trainer_config t = trainer_config();
  t.loss_scale_init = 1099511627776.f;  // 2^40: overflows
  t.loss_scale_min = 274877906944.f;    // 2^38: the third overflow (2^37) falls below
  Setup s(small_model_config(LS_DTYPE_FP16), t);
  Batch batch;
  const std::vector<float> before = s.params();
  step(s, batch.b);  // -> 2^39
  step(s, batch.b);  // -> 2^38
  ls_step_result r;
  ls_step_result_init(&r);
  CHECK(ls_trainer_step(s.trainer, &batch.b, &r) == LS_ERR_NUMERIC);
  const std::string msg = ls_last_error();
  CHECK(msg.find("loss_scale_min") != std::string::npos);
  CHECK(bitwise_equal(s.params(), before));
  // Stopped: every later step refuses, and nothing changes.
  CHECK(ls_trainer_step(s.trainer, &batch.b, nullptr) == LS_ERR_NUMERIC);
  CHECK(bitwise_equal(s.params(), before));
}

TEST_CASE(
    "steps without a result run asynchronously and give the same training as synced "
    "steps") {
  for (ls_dtype dt : {LS_DTYPE_FP16, LS_DTYPE_BF16}) {
    CAPTURE(dt);
    ls_trainer_config t = trainer_config();
    Setup a(small_model_config(dt, 0.1f), t), b(small_model_config(dt, 0.1f), t);
    Batch batch;
    for (int i = 0; i < 5; ++i) {
      REQUIRE(ls_trainer_step(a.trainer, &batch.b, nullptr) == LS_OK);
      step(b, batch.b);
    }
    ls_step_result ra = step(a, batch.b), rb = step(b, batch.b);
    CHECK(ra.num_updates == rb.num_updates);
    CHECK(ra.loss == rb.loss);
    CHECK(bitwise_equal(a.params(), b.params()));
  }
}

TEST_CASE("cuda_graph replays give the same losses and weights as eager steps") {
  for (ls_dtype dt : {LS_DTYPE_FP16, LS_DTYPE_FP32}) {
    CAPTURE(dt);
    ls_trainer_config eager = trainer_config(), graph = trainer_config();
    graph.cuda_graph = 1;
    eager.update_freq = graph.update_freq = 2;  // two phases: accumulate, then update
    Setup a(small_model_config(dt, 0.1f), eager), g(small_model_config(dt, 0.1f), graph);
    Batch b1, b2(4, 30, 25, 3);
    std::vector<double> la, lg;
    for (int i = 0; i < 10; ++i) {
      const ls_batch& b = i % 3 == 2 ? b2.b : b1.b;  // two shapes
      ls_step_result ra = step(a, b), rg = step(g, b);
      la.push_back(ra.loss);
      lg.push_back(rg.loss);
      CHECK(rg.num_updates == ra.num_updates);
    }
    for (size_t i = 0; i < la.size(); ++i) {
      CAPTURE(i);
      CHECK(la[i] == lg[i]);
    }
    CHECK(bitwise_equal(a.params(), g.params()));
    // Dropout draws fresh masks on every replay: two replays of the same batch differ.
    ls_step_result r1 = step(g, b1.b), r2 = step(g, b1.b);
    CHECK(r1.loss != r2.loss);
  }
}

TEST_CASE("token arrays in device memory: trained like host arrays; out-of-range ids refused") {
  ls_trainer_config t = trainer_config();
  Setup h(small_model_config(LS_DTYPE_FP16), t), d(small_model_config(LS_DTYPE_FP16), t);
  Batch batch;
  DeviceBatch dev(batch);
  for (int i = 0; i < 3; ++i) {
    ls_step_result rh = step(h, batch.b), rd = step(d, dev.b);
    CHECK(rh.loss == rd.loss);
    CHECK(rh.tokens == rd.tokens);
  }
  CHECK(bitwise_equal(h.params(), d.params()));

  // An id outside the vocabulary, with a result asked for: refused before anything runs.
  Batch bad = batch;
  bad.tgt[5] = 64;
  DeviceBatch dbad(bad);
  const std::vector<float> w = d.params();
  ls_step_result r;
  ls_step_result_init(&r);
  CHECK(ls_trainer_step(d.trainer, &dbad.b, &r) == LS_ERR_INVALID_ARGUMENT);
  CHECK(std::string(ls_last_error()).find("outside the vocabulary") != std::string::npos);
  CHECK(bitwise_equal(d.params(), w));
  // Without a result: nothing is read back, the update is skipped on the device, and the next
  // step that asks for a result reports it.
  CHECK(ls_trainer_step(d.trainer, &dbad.b, nullptr) == LS_OK);
  CHECK(bitwise_equal(d.params(), w));
  CHECK(ls_trainer_step(d.trainer, &dev.b, &r) == LS_ERR_INVALID_ARGUMENT);
  // That good step itself trained normally.
  r = step(d, dev.b);
  CHECK(r.updated == 1);
}

TEST_CASE(
    "a TimedOps decorator put in through Context::wrap_ops sees every step's calls and "
    "changes nothing") {
  using ls::bench::TimedOps;
  ls_trainer_config t = trainer_config();
  const ls_model_config c = small_model_config(LS_DTYPE_FP16, 0.1f);
  TimedOps* timed = nullptr;
  Setup plain(c, t);
  lstest::Run wrapped(LS_DEVICE_CUDA, c, t, 5, true, [&](ls_context* ctx) {
    ls::Context& context = *ctx->impl;
    ls::Ops* backend = &context.ops();
    context.wrap_ops([&](ls::Ops& inner) {
      CHECK(&inner == backend);
      auto p = std::make_unique<TimedOps>(inner, context.stream());
      timed = p.get();
      return std::unique_ptr<ls::Ops>(std::move(p));
    });
    CHECK(&context.ops() == timed);
  });
  REQUIRE(timed != nullptr);
  Batch batch;
  for (int i = 0; i < 3; ++i) {
    ls_step_result ra = step(plain, batch.b);
    timed->set_enabled(i == 2);  // the third step is timed
    ls_step_result rb = step(wrapped, batch.b);
    timed->set_enabled(false);
    CHECK(ra.loss == rb.loss);
    CHECK(ra.num_updates == rb.num_updates);
  }
  CHECK(bitwise_equal(plain.params(), wrapped.params()));
  const TimedOps::Report rep = timed->report();
  CHECK(rep.calls > 0);
  CHECK(rep.gemm_ms > 0);
  CHECK(rep.span_ms >= rep.timed_ms * 0.99);  // the events' own resolution, ~0.5 us each
  auto ran = [&](const std::string& label) {
    for (const TimedOps::Row& row : rep.rows)
      if (row.label == label) return row.calls > 0;
    return false;
  };
  for (const char* label :
       {"embedding_forward", "embedding_backward", "layernorm_forward", "layernorm_backward",
        "cross_entropy_fwd_bwd", "sum_squares", "update_control", "adam_update"}) {
    CAPTURE(label);
    CHECK(ran(label));
  }
  CHECK((ran("attention_forward") || ran("softmax_forward")));  // fused or unfused attention
}
