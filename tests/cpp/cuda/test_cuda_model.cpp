// The whole model on the GPU through the C API, against the CPU reference with identical
// parameters: forward loss, one training step's parameters, and fp16/bf16 training following
// the fp32 loss curve. Determinism on the same GPU.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "capi/handles.h"
#include "cuda_model_fixture.h"
#include "ls_train.h"
#include "runtime/model.h"

namespace {

// The shared small model (cuda_model_fixture.h), dropout off.
ls_model_config gpu_config(ls_dtype dt) {
  return lstest::small_model_config(dt);
}

// Context seed 21; Adam at a constant learning rate.
struct Run : lstest::Run {
  Run(ls_device_kind dev, const ls_model_config& c, float lr = 1e-3f, bool tf32 = true)
      : lstest::Run(dev, c, lstest::constant_lr_trainer_config(lr), 21, tf32) {}
};

// B = 7 rows of odd lengths (source 37, target 29), padded.
struct Batch : lstest::PaddedBatch {
  Batch() : PaddedBatch(7, 37, 29, /*src_shrink=*/3, /*tgt_shrink=*/2) {}
};

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    num += (a[i] - b[i]) * double(a[i] - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace

TEST_CASE("fp32 on the GPU matches the CPU reference: loss and one update") {
  ls_model_config c = gpu_config(LS_DTYPE_FP32);
  // TF32 off: TF32 rounds GEMM inputs to 10 mantissa bits (~1e-3 relative per product), which
  // Adam's first step (p -= lr * sign(g) for |g| >> eps) turns into sign flips on the smallest
  // gradients; with full fp32 GEMMs only summation order differs.
  Run cpu(LS_DEVICE_CPU, c), gpu(LS_DEVICE_CUDA, c, 1e-3f, /*tf32=*/false);
  gpu.copy_params_from(cpu.model);
  Batch batch;
  ls_eval_result ec, eg;
  ls_eval_result_init(&ec);
  ls_eval_result_init(&eg);
  REQUIRE(ls_model_evaluate(cpu.model, &batch.b, &ec) == LS_OK);
  REQUIRE_MESSAGE(ls_model_evaluate(gpu.model, &batch.b, &eg) == LS_OK, ls_last_error());
  CHECK(eg.tokens == ec.tokens);
  // fp32 (TF32 off in the reference path): summed loss over ~150 tokens, relative 1e-4.
  CHECK(eg.loss == doctest::Approx(ec.loss).epsilon(1e-4));
  ls_step_result rc, rg;
  ls_step_result_init(&rc);
  ls_step_result_init(&rg);
  REQUIRE(ls_trainer_step(cpu.trainer, &batch.b, &rc) == LS_OK);
  REQUIRE_MESSAGE(ls_trainer_step(gpu.trainer, &batch.b, &rg) == LS_OK, ls_last_error());
  CHECK(rg.grad_norm == doctest::Approx(rc.grad_norm).epsilon(1e-3));
  for (const char* name :
       {"encoder.layers.0.self_attn.in_proj_weight", "decoder.layers.1.encoder_attn.in_proj_weight",
        "decoder.layers.0.fc2.weight", "encoder.embed_tokens.weight",
        "decoder.layer_norm.weight"}) {
    CAPTURE(name);
    ls_parameter_info info;
    ls_parameter_info_init(&info);
    int64_t n = 0, idx = -1;
    ls_model_num_parameters(cpu.model, &n);
    for (int64_t i = 0; i < n; ++i) {
      ls_model_parameter_info(cpu.model, i, &info);
      if (std::string(info.name) == name) {
        idx = i;
        break;
      }
    }
    if (idx < 0) continue;  // tied name
    std::vector<float> a(static_cast<size_t>(info.numel)), b(a.size());
    REQUIRE(ls_model_get_parameter(cpu.model, name, a.data(), info.numel) == LS_OK);
    REQUIRE(ls_model_get_parameter(gpu.model, name, b.data(), info.numel) == LS_OK);
    CHECK(rel_diff(b, a) < 1e-4);
  }
}

TEST_CASE("fp16 and bf16 training follow the fp32 CPU reference's loss curve") {
  const int steps = 30;
  auto curve = [&](ls_device_kind dev, ls_dtype dt) {
    ls_model_config c = gpu_config(dt);
    Run ref(LS_DEVICE_CPU, gpu_config(LS_DTYPE_FP32));
    Run r(dev, c, 2e-3f);
    r.copy_params_from(ref.model);
    Batch batch;
    // Losses indexed by the number of updates applied before the step: an fp16 step that
    // overflowed (the first ones, at scale 65536) changed nothing, so the next step sees the
    // same weights; compare like with like.
    std::vector<double> losses;
    for (int i = 0; i < steps; ++i) {
      ls_step_result s;
      ls_step_result_init(&s);
      REQUIRE_MESSAGE(ls_trainer_step(r.trainer, &batch.b, &s) == LS_OK, ls_last_error());
      const int64_t before = s.num_updates - s.updated;
      if (before == static_cast<int64_t>(losses.size())) losses.push_back(s.loss / s.tokens);
    }
    return losses;
  };
  auto ref = curve(LS_DEVICE_CPU, LS_DTYPE_FP32);
  auto half = curve(LS_DEVICE_CUDA, LS_DTYPE_FP16);
  auto bf = curve(LS_DEVICE_CUDA, LS_DTYPE_BF16);
  MESSAGE("loss/token fp32 cpu " << ref.front() << " -> " << ref.back() << "; fp16 " << half.front()
                                 << " -> " << half.back() << "; bf16 " << bf.front() << " -> "
                                 << bf.back());
  CHECK(ref.back() < ref.front() * 0.7);
  REQUIRE(ref.size() == static_cast<size_t>(steps));
  REQUIRE(half.size() >= static_cast<size_t>(steps - 3));  // a few overflow skips at most
  REQUIRE(bf.size() == static_cast<size_t>(steps));
  for (size_t i = 0; i < half.size(); ++i) {
    CAPTURE(i);
    CHECK(std::fabs(half[i] - ref[i]) <= 0.02 * ref[i]);
  }
  for (int i = 0; i < steps; ++i) {
    CAPTURE(i);
    // fp16 keeps ~11 mantissa bits: per-token loss within 2% of fp32 over 30 steps;
    // bf16 keeps 8: within 5%.
    CHECK(std::fabs(bf[i] - ref[i]) <= 0.05 * ref[i]);
  }
}

TEST_CASE("a fixed seed gives the same losses twice on the same GPU (deterministic mode)") {
  auto run = [] {
    ls_model_config c = gpu_config(LS_DTYPE_FP16);
    c.dropout = 0.1f;
    c.attention_dropout = 0.1f;
    Run r(LS_DEVICE_CUDA, c);
    Batch batch;
    std::vector<double> losses;
    for (int i = 0; i < 5; ++i) {
      ls_step_result s;
      ls_step_result_init(&s);
      REQUIRE(ls_trainer_step(r.trainer, &batch.b, &s) == LS_OK);
      losses.push_back(s.loss);
    }
    return losses;
  };
  auto a = run(), b = run();
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
}

TEST_CASE("the criterion in row chunks on the GPU gives the loss and update of one chunk") {
  // The batch has 7 x 29 = 203 target rows: chunks of 24 rows give 9 chunks, the last partial.
  // fp32 without TF32, so only summation order differs between the two models (1e-5).
  ls_model_config c = gpu_config(LS_DTYPE_FP32);
  Run whole(LS_DEVICE_CUDA, c, 1e-3f, /*tf32=*/false);
  const int64_t prev = ls::TransformerGraph::set_criterion_rows_override(24);
  Run chunked(LS_DEVICE_CUDA, c, 1e-3f, /*tf32=*/false);
  ls::TransformerGraph::set_criterion_rows_override(prev);
  chunked.copy_params_from(whole.model);
  Batch batch;
  ls_eval_result ew, ec;
  ls_eval_result_init(&ew);
  ls_eval_result_init(&ec);
  REQUIRE(ls_model_evaluate(whole.model, &batch.b, &ew) == LS_OK);
  REQUIRE_MESSAGE(ls_model_evaluate(chunked.model, &batch.b, &ec) == LS_OK, ls_last_error());
  CHECK(ec.tokens == ew.tokens);
  CHECK(ec.loss == doctest::Approx(ew.loss).epsilon(1e-5));
  ls_step_result rw, rc;
  ls_step_result_init(&rw);
  ls_step_result_init(&rc);
  REQUIRE(ls_trainer_step(whole.trainer, &batch.b, &rw) == LS_OK);
  REQUIRE_MESSAGE(ls_trainer_step(chunked.trainer, &batch.b, &rc) == LS_OK, ls_last_error());
  CHECK(rc.loss == doctest::Approx(rw.loss).epsilon(1e-5));
  CHECK(rc.grad_norm == doctest::Approx(rw.grad_norm).epsilon(1e-5));
  // Adam's first step moves a weight by about lr * sign(g): a gradient element near zero may
  // take the other sign under another summation order, so the weights get the CPU-vs-GPU
  // test's 1e-4 rather than 1e-5.
  CHECK(rel_diff(chunked.params(), whole.params()) < 1e-4);
}

TEST_CASE("criterion scratch and overwritten weight gradients give the same training (GPU)") {
  // A: a 24-row planned logits buffer, but the first micro-batch's criterion runs in the
  // gradient buffer's scratch (every step here: update_freq 1), one chunk of all 203 rows, and
  // the weight-gradient GEMMs overwrite (beta 0) instead of adding to a zeroed buffer.
  // B: neither (the whole gradient buffer zeroed, every GEMM accumulating), a planned buffer of
  // every row: the same chunking, so in deterministic mode the same products: bitwise the same
  // losses after 4 updates, and weights equal in value (x + 0 and x differ at most in the sign
  // of a zero).
  // Then update_freq 2 (the second micro-batch of A runs 24-row chunks in the planned buffer,
  // B one chunk): summation order only, in fp32 without TF32 (1e-5, as the chunk test above).
  auto run = [](ls_dtype dt, int64_t forced_rows, bool scratch, int update_freq,
                std::vector<double>* losses, std::vector<float>* weights) {
    const bool prev_overwrite = ls::TransformerGraph::set_grad_overwrite_enabled(scratch);
    ls_model_config c = lstest::small_model_config(dt, 0.1f);
    ls_trainer_config t = lstest::constant_lr_trainer_config(1e-3f);
    t.deterministic = 1;
    t.update_freq = update_freq;
    const int64_t prev_rows = ls::TransformerGraph::set_criterion_rows_override(forced_rows);
    const bool prev_scratch = ls::TransformerGraph::set_criterion_scratch_enabled(scratch);
    lstest::Run r(LS_DEVICE_CUDA, c, t, 21, /*tf32=*/false);
    ls::TransformerGraph::set_criterion_rows_override(prev_rows);
    ls::TransformerGraph::set_criterion_scratch_enabled(prev_scratch);
    ls::TransformerGraph::set_grad_overwrite_enabled(prev_overwrite);
    const ls::TransformerGraph& g = r.model->impl->graph();
    CHECK(g.overwrite_weight_grads == scratch);
    if (scratch) {
      CHECK(g.criterion_scratch.rows == 320);  // max_batch_tokens: the scratch holds them all
      CHECK(g.criterion_rows == 24);
    } else {
      CHECK(g.criterion_scratch.rows == 0);
    }
    Batch batch;
    for (int i = 0; i < 4 * update_freq; ++i) {
      ls_step_result s;
      ls_step_result_init(&s);
      REQUIRE_MESSAGE(ls_trainer_step(r.trainer, &batch.b, &s) == LS_OK, ls_last_error());
      CHECK(g.last_criterion_in_scratch == (scratch && i % update_freq == 0));
      losses->push_back(s.loss);
      if (s.updated) losses->push_back(s.grad_norm);
    }
    *weights = r.params();
  };
  std::vector<double> la, lb;
  std::vector<float> wa, wb;
  run(LS_DTYPE_FP16, 24, true, 1, &la, &wa);
  run(LS_DTYPE_FP16, 0, false, 1, &lb, &wb);
  REQUIRE(la.size() == lb.size());
  CHECK(std::memcmp(la.data(), lb.data(), la.size() * sizeof(double)) == 0);
  REQUIRE(wa.size() == wb.size());
  size_t differ = 0;
  for (size_t i = 0; i < wa.size(); ++i) differ += !(wa[i] == wb[i]);
  CHECK(differ == 0);
  la.clear(), lb.clear();
  run(LS_DTYPE_FP32, 24, true, 2, &la, &wa);
  run(LS_DTYPE_FP32, 0, false, 2, &lb, &wb);
  REQUIRE(la.size() == lb.size());
  for (size_t i = 0; i < la.size(); ++i) CHECK(la[i] == doctest::Approx(lb[i]).epsilon(1e-5));
  CHECK(rel_diff(wa, wb) < 1e-4);  // Adam's sign flips on near-zero gradients, as above
}

namespace {

// LayerNorm weights in +-[0.5, 1.5] (alternating signs) and biases in [-1, 1]: away from the
// initial ones and zeros, where xhat = (y - beta) / gamma would be y itself.
void randomize_layer_norms(ls_model* m, unsigned seed) {
  int64_t n = 0;
  REQUIRE(ls_model_num_parameters(m, &n) == LS_OK);
  unsigned state = seed;
  auto next = [&] {  // uniform in [0, 1)
    state = state * 1664525u + 1013904223u;
    return (state >> 8) * (1.0f / 16777216.0f);
  };
  for (int64_t i = 0; i < n; ++i) {
    ls_parameter_info info;
    ls_parameter_info_init(&info);
    REQUIRE(ls_model_parameter_info(m, i, &info) == LS_OK);
    const std::string name = info.name;
    if (name.find("layer_norm") == std::string::npos) continue;
    const bool weight = name.find(".weight") != std::string::npos;
    std::vector<float> w(static_cast<size_t>(info.numel));
    for (size_t j = 0; j < w.size(); ++j)
      w[j] = weight ? (j % 2 ? -1.f : 1.f) * (0.5f + next()) : 2.f * next() - 1.f;
    REQUIRE(ls_model_set_parameter(m, info.name, w.data(), info.numel) == LS_OK);
  }
}

}  // namespace

TEST_CASE("recompute_layer_norm gives bitwise the same training on the GPU (pre-LN, fp16, bf16)") {
  // The LayerNorm backward recomputes the block's LayerNorm output from x and the saved
  // statistics with the forward's expression: same bits, so the losses and the weights after a
  // few updates must match exactly. LayerNorm parameters away from ones and zeros, so that a
  // recomputed output that dropped gamma or beta would show.
  for (ls_dtype dt : {LS_DTYPE_FP16, LS_DTYPE_BF16}) {
    CAPTURE(int(dt));
    auto run = [dt](int recompute) {
      ls_model_config c = lstest::small_model_config(dt, 0.1f);
      c.pre_layer_norm = 1;
      c.recompute_layer_norm = recompute;
      Run r(LS_DEVICE_CUDA, c, 2e-3f);
      randomize_layer_norms(r.model, 17u);
      Batch batch;
      std::vector<double> losses;
      for (int i = 0; i < 4; ++i) {
        ls_step_result s;
        ls_step_result_init(&s);
        REQUIRE_MESSAGE(ls_trainer_step(r.trainer, &batch.b, &s) == LS_OK, ls_last_error());
        losses.push_back(s.loss);
      }
      return std::make_pair(losses, r.params());
    };
    const auto off = run(0), on = run(1);
    CHECK(on.first == off.first);
    CHECK(on.second == off.second);
  }
}

TEST_CASE("LayerNorm backward from the output on the GPU: fp32 matches the CPU reference, fp16 "
          "and bf16 follow the default") {
  for (int pre : {1, 0}) {
    CAPTURE(pre);
    // fp32, the option on in both backends, identical parameters: the tolerances of the
    // CPU-vs-GPU test above (only summation order and fp32 rounding differ).
    ls_model_config c = gpu_config(LS_DTYPE_FP32);
    c.pre_layer_norm = pre;
    c.layer_norm_backward_from_output = 1;
    Run cpu(LS_DEVICE_CPU, c), gpu(LS_DEVICE_CUDA, c, 1e-3f, /*tf32=*/false);
    randomize_layer_norms(cpu.model, 5u + unsigned(pre));
    gpu.copy_params_from(cpu.model);
    Batch batch;
    ls_step_result rc, rg;
    ls_step_result_init(&rc);
    ls_step_result_init(&rg);
    REQUIRE(ls_trainer_step(cpu.trainer, &batch.b, &rc) == LS_OK);
    REQUIRE_MESSAGE(ls_trainer_step(gpu.trainer, &batch.b, &rg) == LS_OK, ls_last_error());
    CHECK(rg.loss == doctest::Approx(rc.loss).epsilon(1e-4));
    CHECK(rg.grad_norm == doctest::Approx(rc.grad_norm).epsilon(1e-3));
    CHECK(rel_diff(gpu.params(), cpu.params()) < 1e-4);

    // fp16 / bf16 on the GPU, the option against the default, same start, 12 steps: the
    // recovered xhat carries the rounding of y (fp16 2^-11, bf16 2^-8 relative, up to 2x with
    // |gamma| >= 0.5), far below the 2% / 5% by which these dtypes may follow fp32 (test
    // above); the per-token losses must stay within 1% / 2.5% of each other.
    for (ls_dtype dt : {LS_DTYPE_FP16, LS_DTYPE_BF16}) {
      CAPTURE(static_cast<int>(dt));
      auto losses = [&](int from_output) {
        ls_model_config h = gpu_config(dt);
        h.pre_layer_norm = pre;
        h.layer_norm_backward_from_output = from_output;
        Run r(LS_DEVICE_CUDA, h, 2e-3f);
        r.copy_params_from(cpu.model);
        std::vector<double> out;
        for (int i = 0; i < 12; ++i) {
          ls_step_result s;
          ls_step_result_init(&s);
          REQUIRE_MESSAGE(ls_trainer_step(r.trainer, &batch.b, &s) == LS_OK, ls_last_error());
          // Indexed by the updates applied before the step (an overflowed fp16 step changed
          // nothing), as in the loss-curve test.
          const int64_t before = s.num_updates - s.updated;
          if (before == static_cast<int64_t>(out.size())) out.push_back(s.loss / s.tokens);
        }
        return out;
      };
      const auto off = losses(0), on = losses(1);
      REQUIRE(on.size() >= 9);  // a few overflow skips at most
      REQUIRE(off.size() >= 9);
      const double tol = dt == LS_DTYPE_FP16 ? 0.01 : 0.025;
      for (size_t i = 0; i < std::min(on.size(), off.size()); ++i) {
        CAPTURE(i);
        CHECK(std::isfinite(on[i]));
        CHECK(std::fabs(on[i] - off[i]) <= tol * off[i]);
      }
    }
  }
}
