// The GPU trainer through the C API: dynamic loss scaling with an injected overflow (the step is
// skipped, the scale halves, weights/moments/step count are bitwise unchanged, the scale grows
// after the interval), the minimum-scale stop, asynchronous steps (no result: no read-back),
// CUDA-graph replay against eager steps, and token arrays given in device memory (validated on
// the device).
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "ls_train.h"

namespace {

ls_model_config small_config(ls_dtype dt, float dropout = 0.f) {
  ls_model_config c;
  ls_model_config_init(&c);
  c.src_vocab_size = c.tgt_vocab_size = 64;
  c.hidden_size = 64;
  c.ffn_size = 128;
  c.num_heads = 4;
  c.encoder_layers = 2;
  c.decoder_layers = 2;
  c.max_seq_len = 40;
  c.max_batch_tokens = 320;
  c.dropout = dropout;
  c.attention_dropout = dropout;
  c.dtype = dt;
  return c;
}

struct Setup {
  ls_context* ctx = nullptr;
  ls_model* model = nullptr;
  ls_trainer* trainer = nullptr;
  Setup(const ls_model_config& c, const ls_trainer_config& t) {
    ls_context_options o;
    ls_context_options_init(&o);
    o.device = LS_DEVICE_CUDA;
    o.seed = 5;
    REQUIRE_MESSAGE(ls_context_create(&o, &ctx) == LS_OK, ls_last_error());
    REQUIRE_MESSAGE(ls_model_create(ctx, &c, &model) == LS_OK, ls_last_error());
    REQUIRE_MESSAGE(ls_trainer_create(model, &t, &trainer) == LS_OK, ls_last_error());
  }
  ~Setup() {
    ls_trainer_destroy(trainer);
    ls_model_destroy(model);
    ls_context_destroy(ctx);
  }
  // Every parameter of the model (master weights read back as fp32).
  std::vector<float> params() {
    std::vector<float> all;
    int64_t n = 0;
    REQUIRE(ls_model_num_parameters(model, &n) == LS_OK);
    for (int64_t i = 0; i < n; ++i) {
      ls_parameter_info info;
      ls_parameter_info_init(&info);
      REQUIRE(ls_model_parameter_info(model, i, &info) == LS_OK);
      std::vector<float> w(static_cast<size_t>(info.numel));
      REQUIRE(ls_model_get_parameter(model, info.name, w.data(), info.numel) == LS_OK);
      all.insert(all.end(), w.begin(), w.end());
    }
    return all;
  }
};

ls_trainer_config trainer_config() {
  ls_trainer_config t;
  ls_trainer_config_init(&t);
  t.lr = 1e-3f;
  t.lr_schedule = LS_LR_CONSTANT;
  return t;
}

struct Batch {
  std::vector<int32_t> src, prev, tgt;
  ls_batch b;
  explicit Batch(int B = 6, int Ls = 21, int Lt = 17, int salt = 0) {
    for (int r = 0; r < B; ++r) {
      int ls = Ls - 2 * r, lt = Lt - r;
      for (int t = 0; t < Ls; ++t)
        src.push_back(t < ls - 1 ? 4 + (r * 7 + t * 3 + salt) % 60 : t == ls - 1 ? 2 : 1);
      for (int t = 0; t < Lt; ++t) {
        int y = t < lt - 1 ? 4 + (r * 5 + t * 11 + salt) % 60 : t == lt - 1 ? 2 : 1;
        tgt.push_back(y);
        prev.push_back(t == 0 ? 2 : tgt[tgt.size() - 2] == 1 ? 1 : tgt[tgt.size() - 2]);
      }
    }
    ls_batch_init(&b);
    b.batch_size = B;
    b.src_len = Ls;
    b.src_tokens = src.data();
    b.tgt_len = Lt;
    b.prev_output_tokens = prev.data();
    b.target = tgt.data();
  }
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

ls_step_result step(Setup& s, const ls_batch& b, ls_status expect = LS_OK) {
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

TEST_CASE("fp16: an overflowing gradient skips the update, halves the scale, and the scale grows "
          "after the interval") {
  ls_trainer_config t = trainer_config();
  // 2^40: the scaled logit gradients overflow fp16 (max 65504) for sure: a real injected inf.
  t.loss_scale_init = 1099511627776.f;
  t.loss_scale_interval = 3;
  Setup s(small_config(LS_DTYPE_FP16), t);
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

TEST_CASE("fp16: a loss scale below loss_scale_min stops training with LS_ERR_NUMERIC, state "
          "untouched") {
  ls_trainer_config t = trainer_config();
  t.loss_scale_init = 1099511627776.f;  // 2^40: overflows
  t.loss_scale_min = 274877906944.f;    // 2^38: the third overflow (2^37) falls below
  Setup s(small_config(LS_DTYPE_FP16), t);
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

TEST_CASE("steps without a result run asynchronously and give the same training as synced "
          "steps") {
  for (ls_dtype dt : {LS_DTYPE_FP16, LS_DTYPE_BF16}) {
    CAPTURE(dt);
    ls_trainer_config t = trainer_config();
    Setup a(small_config(dt, 0.1f), t), b(small_config(dt, 0.1f), t);
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
    Setup a(small_config(dt, 0.1f), eager), g(small_config(dt, 0.1f), graph);
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
  Setup h(small_config(LS_DTYPE_FP16), t), d(small_config(LS_DTYPE_FP16), t);
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
