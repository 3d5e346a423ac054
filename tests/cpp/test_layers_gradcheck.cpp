// Finite-difference gradient checks of every layer, through the whole model in double: the
// analytic gradient of the summed label-smoothed loss (dropout on, masks fixed by the Philox
// key) against central differences, for sampled elements of every parameter tensor
// (embeddings, positions, self- and cross-attention, feed-forward, LayerNorms, final norms,
// output projection). Plus the masks: padding never leaks into other rows, and in causal
// attention a later token never changes an earlier position's loss.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "runtime/context.h"
#include "runtime/model.h"

namespace {

struct Case {
  const char* name;
  ls_arch arch;
  int pre_ln;
  int learned;
  ls_activation act;
  int share_all;
};

ls_model_config small_config(const Case& k) {
  ls_model_config c;
  c.struct_size = sizeof(c);
  ls::model_config_defaults(c);
  c.arch = k.arch;
  c.src_vocab_size = c.tgt_vocab_size = 13;
  c.hidden_size = 8;
  c.ffn_size = 12;
  c.num_heads = 2;
  c.encoder_layers = k.arch == LS_ARCH_ENCODER_DECODER ? 1 : 0;
  c.decoder_layers = 1;
  c.pre_layer_norm = k.pre_ln;
  c.learned_positions = k.learned;
  c.activation = k.act;
  c.share_all_embeddings = k.share_all;
  c.share_decoder_input_output_embed = k.share_all;
  c.dropout = 0.2f;
  c.attention_dropout = 0.2f;
  c.activation_dropout = 0.2f;
  c.max_seq_len = 6;
  c.max_batch_tokens = 12;
  c.dtype = LS_DTYPE_FP64;
  c.label_smoothing = 0.1f;
  return c;
}

struct Rig {
  ls::Context ctx;
  ls::Model model;
  std::vector<int32_t> src, prev, tgt;
  ls_batch batch;
  explicit Rig(const ls_model_config& c)
      : ctx([] {
          ls::ContextOptions o;
          o.device = ls::ContextOptions::Device::Cpu;
          o.seed = 17;
          return o;
        }()),
        model(ctx, c) {
    // B = 2, Ls = 5, Lt = 4 with padding (pad = 1) in the second row.
    src = {4, 5, 6, 7, 2, 8, 9, 2, 1, 1};
    prev = {2, 10, 11, 12, 2, 3, 1, 1};
    tgt = {10, 11, 12, 2, 3, 2, 1, 1};
    ls_batch_init(&batch);
    batch.batch_size = 2;
    batch.src_len = c.arch == LS_ARCH_ENCODER_DECODER ? 5 : 0;
    batch.src_tokens = c.arch == LS_ARCH_ENCODER_DECODER ? src.data() : nullptr;
    batch.tgt_len = 4;
    batch.prev_output_tokens = prev.data();
    batch.target = tgt.data();
    load();
    *model.scalar_ptr<double>(ls::TransformerGraph::kGradScale) = 1.0;
  }
  void load() {
    ls::HostBatch hb;
    model.validate_batch(batch, hb);
    model.load_batch(hb);
  }
  double loss() {
    model.zero_sums();
    model.run_forward(true);
    double s[3];
    model.read_sums(s);
    return s[0];
  }
  double* master() { return static_cast<double*>(model.buffer(model.graph().master)); }
  double* grad() { return static_cast<double*>(model.buffer(model.graph().grad)); }

  // The analytic gradient of the summed loss (one forward + backward).
  std::vector<double> analytic_gradient() {
    const size_t n = model.graph().params().total_elements();
    std::memset(grad(), 0, n * sizeof(double));
    model.zero_sums();
    model.run_forward(true);
    model.run_backward(true);
    return std::vector<double>(grad(), grad() + n);
  }
};

// Central differences of the loss against `analytic` for every element of the tensors `whole`
// selects and 4 sampled elements (from `seed`) of every other tensor. Central differences in
// double with h = 1e-6: truncation O(h^2) ~ 1e-12 and rounding ~ 1e-16 / h = 1e-10 relative to
// the loss (~10): 1e-6 leaves margin, and a wrong term in any backward gives errors of order 1.
void check_against_finite_differences(Rig& rig, const std::vector<double>& analytic,
                                      uint32_t seed,
                                      const std::function<bool(const std::string&)>& whole,
                                      const std::string& label) {
  std::mt19937 gen(seed);
  const double h = 1e-6;
  int checked = 0;
  double worst = 0;
  for (const auto& e : rig.model.params().entries()) {
    CAPTURE(e.name);
    std::uniform_int_distribution<size_t> pick(0, e.ref.numel - 1);
    const bool all = whole(e.name);
    const size_t samples = all ? e.ref.numel : 4;
    for (size_t s = 0; s < samples; ++s) {
      size_t i = e.ref.offset + (all ? s : pick(gen));
      double saved = rig.master()[i];
      rig.master()[i] = saved + h;
      double lp = rig.loss();
      rig.master()[i] = saved - h;
      double lm = rig.loss();
      rig.master()[i] = saved;
      double fd = (lp - lm) / (2 * h);
      double err = std::fabs(fd - analytic[i]) / std::max(1.0, std::fabs(fd) + std::fabs(analytic[i]));
      worst = std::max(worst, err);
      CHECK_MESSAGE(err < 1e-6, "element " << i - e.ref.offset << ": fd " << fd << " analytic " << analytic[i]);
      ++checked;
    }
  }
  MESSAGE(label << ": " << checked << " elements checked, worst relative error " << worst);
}

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// The tensors a LayerNorm's backward variant reaches first, checked whole: every LayerNorm and
// the projections that read a LayerNorm's output (in_proj_weight/bias, fc1).
bool checked_whole_below_layer_norms(const std::string& name) {
  return contains(name, ".fc1.") || contains(name, ".in_proj_") || contains(name, "layer_norm");
}

// Both architectures, pre- and post-LN, both positions and activations, shared or not.
const Case kEveryKind[] = {
    {"encoder-decoder pre-LN sinusoidal relu", LS_ARCH_ENCODER_DECODER, 1, 0, LS_ACTIVATION_RELU, 0},
    {"encoder-decoder post-LN learned gelu shared", LS_ARCH_ENCODER_DECODER, 0, 1, LS_ACTIVATION_GELU, 1},
    {"decoder-only pre-LN learned gelu", LS_ARCH_DECODER_ONLY, 1, 1, LS_ACTIVATION_GELU, 1},
    {"decoder-only post-LN sinusoidal relu", LS_ARCH_DECODER_ONLY, 0, 0, LS_ACTIVATION_RELU, 0},
};

}  // namespace

TEST_CASE("every layer's gradient matches finite differences (fp64, dropout on)") {
  for (const Case& k : kEveryKind) {
    const std::string case_name = k.name;
    CAPTURE(case_name);
    ls_model_config c = small_config(k);
    Rig rig(c);
    const std::vector<double> analytic = rig.analytic_gradient();
    // The feed-forward's tensors are checked whole: every unit of fc1 (ReLU's and dropout's
    // zeros included, since the ReLU backward reads the mask from the saved output), 4
    // sampled elements elsewhere.
    check_against_finite_differences(
        rig, analytic, 123,
        [](const std::string& name) { return contains(name, ".fc1.") || contains(name, ".fc2."); },
        case_name);
    // The padding row of an untied table receives no gradient (the embedding's backward skips
    // padding tokens; a tied table also gets the output projection's gradient).
    if (k.arch == LS_ARCH_ENCODER_DECODER && !k.share_all) {
      const auto& emb = rig.model.params().find("encoder.embed_tokens.weight");
      for (int j = 0; j < c.hidden_size; ++j)
        CHECK(analytic[emb.ref.offset + c.padding_idx * c.hidden_size + j] == 0.0);
    }
  }
}

TEST_CASE("padding never leaks: a row's loss is the same alone and batched with a longer row") {
  const Case k = {"encdec", LS_ARCH_ENCODER_DECODER, 1, 0, LS_ACTIVATION_RELU, 0};
  ls_model_config c = small_config(k);
  c.dropout = c.attention_dropout = c.activation_dropout = 0.f;
  Rig rig(c);
  // Row 0 alone: source {8, 9, 2}, target {3, 2}.
  std::vector<int32_t> s1 = {8, 9, 2}, p1 = {2, 3}, t1 = {3, 2};
  ls_batch b;
  ls_batch_init(&b);
  b.batch_size = 1;
  b.src_len = 3;
  b.src_tokens = s1.data();
  b.tgt_len = 2;
  b.prev_output_tokens = p1.data();
  b.target = t1.data();
  ls_eval_result alone;
  ls_eval_result_init(&alone);
  rig.model.evaluate(b, alone);
  // The same row padded to length 5/4, next to a longer row whose targets are all padding
  // (so it adds nothing to the loss but shares the batch).
  std::vector<int32_t> s2 = {8, 9, 2, 1, 1, 4, 5, 6, 7, 2};
  std::vector<int32_t> p2 = {2, 3, 1, 1, 2, 10, 11, 12};
  std::vector<int32_t> t2 = {3, 2, 1, 1, 1, 1, 1, 1};
  b.batch_size = 2;
  b.src_len = 5;
  b.src_tokens = s2.data();
  b.tgt_len = 4;
  b.prev_output_tokens = p2.data();
  b.target = t2.data();
  ls_eval_result batched;
  ls_eval_result_init(&batched);
  rig.model.evaluate(b, batched);
  CHECK(batched.tokens == alone.tokens);
  CHECK(batched.loss == doctest::Approx(alone.loss).epsilon(1e-12));
  // Changing what sits in the other row changes nothing for row 0.
  s2[6] = 11;
  p2[6] = 5;
  ls_eval_result changed;
  ls_eval_result_init(&changed);
  rig.model.evaluate(b, changed);
  CHECK(changed.loss == doctest::Approx(alone.loss).epsilon(1e-12));
}

TEST_CASE("causal attention: a later token never changes an earlier position's loss") {
  for (ls_arch arch : {LS_ARCH_ENCODER_DECODER, LS_ARCH_DECODER_ONLY}) {
    const Case k = {"causal", arch, 1, 1, LS_ACTIVATION_GELU, 0};
    ls_model_config c = small_config(k);
    c.dropout = c.attention_dropout = c.activation_dropout = 0.f;
    Rig rig(c);
    // Targets only at positions 0 and 1 count; positions 2, 3 are ignored (padding targets).
    std::vector<int32_t> prev = {2, 10, 11, 12}, tgt = {10, 11, 1, 1}, src = {4, 5, 2};
    ls_batch b;
    ls_batch_init(&b);
    b.batch_size = 1;
    b.tgt_len = 4;
    b.prev_output_tokens = prev.data();
    b.target = tgt.data();
    if (arch == LS_ARCH_ENCODER_DECODER) {
      b.src_len = 3;
      b.src_tokens = src.data();
    }
    ls_eval_result r0, r1, r2;
    ls_eval_result_init(&r0);
    ls_eval_result_init(&r1);
    ls_eval_result_init(&r2);
    rig.model.evaluate(b, r0);
    prev[2] = 5;
    prev[3] = 6;
    rig.model.evaluate(b, r1);
    CHECK(r1.loss == r0.loss);  // bitwise: positions 0, 1 never see 2, 3
    prev[1] = 7;                // an input the counted positions do see
    rig.model.evaluate(b, r2);
    CHECK(r2.loss != r0.loss);
  }
}

TEST_CASE(
    "pre-LN with the LayerNorm outputs kept for backward (recompute_layer_norm = 0): "
    "gradients match finite differences (fp64, dropout on)") {
  // The default (the other cases here) recomputes LN(x) in the LayerNorm backward; kept, the
  // saved LN(x) feeds the weight gradients of each sublayer's first projections (in_proj_weight,
  // fc1) instead: those tensors and every LayerNorm are checked whole, 4 sampled elements of
  // every other tensor.
  const Case cases[] = {
      {"encoder-decoder pre-LN sinusoidal relu", LS_ARCH_ENCODER_DECODER, 1, 0, LS_ACTIVATION_RELU, 0},
      {"decoder-only pre-LN learned gelu", LS_ARCH_DECODER_ONLY, 1, 1, LS_ACTIVATION_GELU, 1},
  };
  for (const Case& k : cases) {
    const std::string case_name = k.name;
    CAPTURE(case_name);
    ls_model_config c = small_config(k);
    c.recompute_layer_norm = 0;
    Rig rig(c);
    check_against_finite_differences(rig, rig.analytic_gradient(), 321,
                                     checked_whole_below_layer_norms,
                                     case_name + " (LN outputs kept)");
  }
}

TEST_CASE("LayerNorm backward from its output: gradients match finite differences (fp64, "
          "dropout on)") {
  // With the option on, no LayerNorm keeps its input: xhat = (y - beta) / gamma. The LayerNorm
  // parameters get values away from their initial ones and zeros (gamma in +-[0.5, 1.5] with
  // both signs, beta in [-1, 1]), so that a mixed-up gamma or beta in the recovery shows; they
  // and every first projection below a LayerNorm are checked whole, 4 sampled elements of every
  // other tensor. Pre- and post-LN, both architectures.
  for (const Case& k : kEveryKind) {
    const std::string case_name = k.name;
    CAPTURE(case_name);
    ls_model_config c = small_config(k);
    c.layer_norm_backward_from_output = 1;
    Rig rig(c);
    std::mt19937 gen(77);
    std::uniform_real_distribution<double> mag(0.5, 1.5), shift(-1.0, 1.0);
    int norms = 0;
    for (const auto& e : rig.model.params().entries()) {
      if (!contains(e.name, "layer_norm")) continue;
      const bool weight = contains(e.name, ".weight");
      norms += weight;
      for (size_t i = 0; i < e.ref.numel; ++i)
        rig.master()[e.ref.offset + i] =
            weight ? (i % 2 ? -1 : 1) * mag(gen) : shift(gen);
    }
    CHECK(norms == (k.pre_ln ? (k.arch == LS_ARCH_ENCODER_DECODER ? 7 : 3)
                             : (k.arch == LS_ARCH_ENCODER_DECODER ? 5 : 2)));
    check_against_finite_differences(rig, rig.analytic_gradient(), 654,
                                     checked_whole_below_layer_norms,
                                     case_name + " (LayerNorm backward from output)");
  }
}
