// Fixtures shared by the whole-model CUDA tests (test_cuda_model.cpp, test_cuda_trainer.cpp),
// all through the public C API: a small encoder-decoder config, a Run owning a context + model
// + trainer (with parameter copy and read-back), and a padded batch of rows of decreasing
// lengths. Header-only; not a test file itself (tests/CMakeLists.txt globs test_*.cpp).
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "ls_train.h"

namespace lstest {

// 2 + 2 layers, d = 64, ffn 128, 4 heads, vocab 64, up to 320 tokens of length <= 40.
// dropout applies to both the residual dropout and the attention probabilities.
inline ls_model_config small_model_config(ls_dtype dt, float dropout = 0.f) {
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

// Adam at a constant learning rate (no warm-up), the rest as ls_trainer_config_init gives it.
inline ls_trainer_config constant_lr_trainer_config(float lr = 1e-3f) {
  ls_trainer_config t;
  ls_trainer_config_init(&t);
  t.lr = lr;
  t.lr_schedule = LS_LR_CONSTANT;
  return t;
}

// A context on `device` (seeded, TF32 as asked), a model of config `c` and its trainer.
// before_model, when given, runs on the fresh context before the model is created.
struct Run {
  ls_context* ctx = nullptr;
  ls_model* model = nullptr;
  ls_trainer* trainer = nullptr;
  Run(ls_device_kind device, const ls_model_config& c, const ls_trainer_config& t, uint64_t seed,
      bool tf32 = true, const std::function<void(ls_context*)>& before_model = nullptr) {
    ls_context_options o;
    ls_context_options_init(&o);
    o.device = device;
    o.seed = seed;
    o.allow_tf32 = tf32 ? 1 : 0;
    REQUIRE_MESSAGE(ls_context_create(&o, &ctx) == LS_OK, ls_last_error());
    if (before_model) before_model(ctx);
    REQUIRE_MESSAGE(ls_model_create(ctx, &c, &model) == LS_OK, ls_last_error());
    REQUIRE_MESSAGE(ls_trainer_create(model, &t, &trainer) == LS_OK, ls_last_error());
  }
  ~Run() {
    ls_trainer_destroy(trainer);
    ls_model_destroy(model);
    ls_context_destroy(ctx);
  }
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  // Copies every parameter from another model.
  void copy_params_from(ls_model* other) {
    int64_t n = 0;
    REQUIRE(ls_model_num_parameters(other, &n) == LS_OK);
    for (int64_t i = 0; i < n; ++i) {
      ls_parameter_info info;
      ls_parameter_info_init(&info);
      REQUIRE(ls_model_parameter_info(other, i, &info) == LS_OK);
      std::vector<float> w(static_cast<size_t>(info.numel));
      REQUIRE(ls_model_get_parameter(other, info.name, w.data(), info.numel) == LS_OK);
      REQUIRE(ls_model_set_parameter(model, info.name, w.data(), info.numel) == LS_OK);
    }
  }
  // Every parameter of the model (master weights read back as fp32), in parameter order.
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

// B rows padded to source length Ls and target length Lt (padding 1, eos 2). Row r holds
// Ls - src_shrink * r source and Lt - tgt_shrink * r target tokens, the last of them eos, the
// others in [4, 64) from (r, t, salt); prev_output_tokens is the target shifted right behind an
// eos. Copies point their ls_batch at their own arrays.
struct PaddedBatch {
  std::vector<int32_t> src, prev, tgt;
  ls_batch b;
  PaddedBatch(int B, int Ls, int Lt, int src_shrink, int tgt_shrink, int salt = 0) {
    for (int r = 0; r < B; ++r) {
      int ls = Ls - src_shrink * r, lt = Lt - tgt_shrink * r;
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
  PaddedBatch(const PaddedBatch& o) : src(o.src), prev(o.prev), tgt(o.tgt), b(o.b) { point(); }
  PaddedBatch& operator=(const PaddedBatch& o) {
    src = o.src;
    prev = o.prev;
    tgt = o.tgt;
    b = o.b;
    point();
    return *this;
  }

 private:
  void point() {
    b.src_tokens = src.data();
    b.prev_output_tokens = prev.data();
    b.target = tgt.data();
  }
};

}  // namespace lstest
