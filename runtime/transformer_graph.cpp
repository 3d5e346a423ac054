// The Transformer's structure: which layers, which buffers, and the order they run in.
// Used both for planning (a dry run) and for the real step.
#include <algorithm>
#include <atomic>
#include <cmath>

#include "layers/attention.h"
#include "layers/feed_forward.h"
#include "runtime/error.h"
#include "runtime/model.h"

namespace ls {

namespace {
constexpr size_t kCublasWorkspaceBytes = 32u << 20;  // cuBLASLt workspace (CUDA only)
constexpr int64_t kMaxGenerateRows = 256;
std::atomic<int64_t> g_criterion_rows_override{0};  // tests only
std::atomic<bool> g_criterion_scratch_enabled{true};  // tests and benchmarks only
std::atomic<bool> g_grad_overwrite_enabled{true};     // tests and benchmarks only
}  // namespace

int64_t TransformerGraph::criterion_rows_for(int64_t max_tokens, int64_t vocab, DType dt) {
  const size_t row_bytes = static_cast<size_t>(vocab) * dtype_size(dt);
  int64_t rows = static_cast<int64_t>(kCriterionChunkBytes / std::max<size_t>(row_bytes, 1));
  rows = std::max<int64_t>(rows / 8 * 8, 8);
  return std::min(rows, max_tokens);
}

int64_t TransformerGraph::set_criterion_rows_override(int64_t rows) {
  return g_criterion_rows_override.exchange(std::max<int64_t>(rows, 0));
}

bool TransformerGraph::set_criterion_scratch_enabled(bool enabled) {
  return g_criterion_scratch_enabled.exchange(enabled);
}

bool TransformerGraph::set_grad_overwrite_enabled(bool enabled) {
  return g_grad_overwrite_enabled.exchange(enabled);
}

int64_t TransformerGraph::criterion_scratch_chunk_rows(int64_t tokens) const {
  const int64_t cap = criterion_scratch.rows;
  if (cap <= 0 || tokens <= cap) return std::max<int64_t>(cap, 1);
  const int64_t chunks = (tokens + cap - 1) / cap;
  const int64_t even = ((tokens + chunks - 1) / chunks + 7) / 8 * 8;
  return std::min(cap, even);  // cap is a multiple of 8 here (it is below max_tokens)
}

TransformerGraph::TransformerGraph(const ls_model_config& cfg, bool cuda)
    : cfg_(cfg), cuda_(cuda), dt_(to_dtype(cfg.dtype)), acc_(accum_dtype(dt_)) {
  validate_model_config(cfg_, cuda);
  dims_.max_tokens = cfg_.max_batch_tokens;
  dims_.max_len = cfg_.max_seq_len;
  dims_.hidden = cfg_.hidden_size;
  dims_.ffn = cfg_.ffn_size;
  dims_.heads = cfg_.num_heads;
  dims_.dt = dt_;
  const size_t T = static_cast<size_t>(cfg_.max_batch_tokens);
  const size_t d = static_cast<size_t>(cfg_.hidden_size);
  const size_t V = static_cast<size_t>(cfg_.tgt_vocab_size);
  const size_t e = dtype_size(dt_), a = dtype_size(acc_);

  // Inputs of one batch (persistent: written by load_batch before the step's first kernel).
  const auto In = MemCategory::Inputs;
  if (encoder_decoder()) {
    src_tokens = planner_.declare_persistent("input.src_tokens", In, T * 4);
    src_pad = planner_.declare_persistent("input.src_pad", In, T);
  }
  prev_tokens = planner_.declare_persistent("input.prev_output_tokens", In, T * 4);
  target = planner_.declare_persistent("input.target", In, T * 4);
  tgt_pad = planner_.declare_persistent("input.tgt_pad", In, T);
  input_bytes = (encoder_decoder() ? 5 * T : 0) + 9 * T;

  // Layers, in the order their parameters are laid out.
  if (encoder_decoder()) {
    enc_out = BufferId{};  // set after the encoder is built
    build_stack(encoder_, "encoder", cfg_.encoder_layers, false);
    enc_out = stack_output(encoder_);
    d_enc_out = planner_.declare("encoder.d_out", MemCategory::Temporaries, T * d * e);
  }
  build_stack(decoder_, "decoder", cfg_.decoder_layers, true);
  dec_hidden = stack_output(decoder_);
  if (cfg_.share_decoder_input_output_embed) {
    output_projection = decoder_.embed->table();
    params_.alias("decoder.output_projection.weight", "decoder.embed_tokens.weight");
  } else {
    ParamInit normal;
    normal.kind = InitKind::Normal;
    normal.std = 1.0 / std::sqrt(static_cast<double>(d));
    output_projection = params_.add("decoder.output_projection.weight",
                                    {cfg_.tgt_vocab_size, cfg_.hidden_size}, normal);
  }
  // The criterion's first chunk overwrites the output projection's gradient in a fresh pass;
  // a tied embedding's backward adds to it later, in backward.
  params_.set_grad_overwritten(output_projection);
  // The criterion runs over the target rows in chunks (forward()): the logits buffer holds one
  // chunk, not [T, V] (for Transformer-big at 8192 tokens: 64 MiB instead of 512 MiB, and it
  // is dead before the decoder's backward starts).
  const int64_t forced = g_criterion_rows_override.load();
  criterion_rows = forced > 0 ? std::min<int64_t>(forced, cfg_.max_batch_tokens)
                              : criterion_rows_for(cfg_.max_batch_tokens, V, dt_);
  const size_t C = static_cast<size_t>(criterion_rows);
  logits = planner_.declare("criterion.logits", MemCategory::Temporaries, C * V * e);
  lse = planner_.declare("criterion.lse", MemCategory::SavedActivations, T * a);
  d_dec_out = planner_.declare("decoder.d_out", MemCategory::Temporaries, T * d * e);
  gen_max_rows = std::min<int64_t>(kMaxGenerateRows, cfg_.max_batch_tokens);
  const size_t G = static_cast<size_t>(gen_max_rows);
  gen_hidden = planner_.declare("generate.hidden", MemCategory::Temporaries, G * d * e);
  gen_logits = planner_.declare("generate.logits", MemCategory::Temporaries, G * V * e);
  gen_logits_acc = planner_.declare("generate.logits_acc", MemCategory::Temporaries, G * V * a);

  // Flat parameter buffers: master (acc), working copy (dt, only when it differs), gradients
  // (acc, one flat buffer so one fused pass covers them), Adam moments (acc).
  const size_t n = params_.total_elements();
  master = planner_.declare_persistent("params.master", MemCategory::Parameters, n * a);
  if (dt_ != acc_)
    work = planner_.declare_persistent("params.working", MemCategory::WorkingCopy, n * e);
  grad = planner_.declare_persistent("params.grad", MemCategory::Gradients, n * a);
  adam_m = planner_.declare_persistent("adam.m", MemCategory::OptimizerState, n * a);
  adam_v = planner_.declare_persistent("adam.v", MemCategory::OptimizerState, n * a);
  scalars =
      planner_.declare_persistent("step.scalars", MemCategory::LossScaler, kScalarCount * a + 64);
  train_state =
      planner_.declare_persistent("step.train_state", MemCategory::LossScaler, sizeof(TrainState));
  plan_criterion_scratch();
  plan_grad_zeroing();
  if (cuda_) {
    workspace_bytes = kCublasWorkspaceBytes;
    workspace =
        planner_.declare_persistent("cublaslt.workspace", MemCategory::Workspace, workspace_bytes);
  }
}

// The criterion's scratch: the larger of the gradient buffer's element ranges before and after
// the output projection's gradient, its start rounded up to 256 bytes (after the parameters and
// criterion_rows are known).
void TransformerGraph::plan_criterion_scratch() {
  if (!g_criterion_scratch_enabled.load()) return;
  const size_t n = params_.total_elements(), a = dtype_size(acc_);
  const size_t p0 = output_projection.offset, p1 = p0 + output_projection.numel;
  const size_t align = 256 / a;
  const size_t after = (p1 + align - 1) / align * align;
  GradScratch sc;
  if (after < n && n - after > p0) {
    sc.begin = after;
    sc.end = n;
  } else {
    sc.begin = 0;
    sc.end = p0;
  }
  const size_t row_bytes = static_cast<size_t>(cfg_.tgt_vocab_size) * dtype_size(dt_);
  int64_t rows = static_cast<int64_t>((sc.end - sc.begin) * a / row_bytes);
  if (rows < cfg_.max_batch_tokens) rows = rows / 8 * 8;
  rows = std::min<int64_t>(rows, cfg_.max_batch_tokens);
  if (rows > criterion_rows) {
    sc.rows = rows;
    criterion_scratch = sc;
  }
}

// What a fresh training pass zeroes (Model::train_pass): with overwriting weight gradients only
// the accumulated ranges, else everything; the part inside the criterion's scratch is zeroed by
// the criterion after its last chunk, the rest before the forward (after plan_criterion_scratch).
void TransformerGraph::plan_grad_zeroing() {
  const size_t n = params_.total_elements();
  overwrite_weight_grads = g_grad_overwrite_enabled.load();
  std::vector<std::pair<size_t, size_t>> zero;
  if (overwrite_weight_grads)
    zero = params_.accumulated_ranges();
  else
    zero.emplace_back(0, n);
  const size_t s0 = criterion_scratch.begin,
               s1 = criterion_scratch.rows > 0 ? criterion_scratch.end : 0;
  for (const auto& r : zero) {  // split at the scratch's bounds
    const size_t pieces[3][2] = {{r.first, std::min(r.second, s0)},
                                 {std::max(r.first, s0), std::min(r.second, s1)},
                                 {std::max(r.first, s1), r.second}};
    for (int i = 0; i < 3; ++i) {
      if (pieces[i][1] <= pieces[i][0]) continue;
      std::vector<uint64_t>& dst = i == 1 ? grad_zero_after_criterion : grad_zero_before;
      dst.push_back(pieces[i][0]);
      dst.push_back(pieces[i][1]);
      grad_zero_max_elements =
          std::max<uint64_t>(grad_zero_max_elements, pieces[i][1] - pieces[i][0]);
    }
  }
  const size_t range_words = grad_zero_before.size() + grad_zero_after_criterion.size();
  if (range_words > 0)
    grad_zero_ranges = planner_.declare_persistent("step.grad_zero_ranges", MemCategory::LossScaler,
                                                   range_words * sizeof(uint64_t));
}

void TransformerGraph::build_stack(Stack& s, const std::string& prefix, int layers, bool decoder) {
  const bool encdec = encoder_decoder();
  s.side = decoder ? Side::Target : Side::Source;
  const bool pre = cfg_.pre_layer_norm != 0;
  // Pre-LN blocks may recompute LN(x) in backward instead of saving it (post-LN ignores it);
  // any LayerNorm may work from its output in backward, which keeps neither LN(x) nor x, and
  // then the first is moot.
  const NormBackward nb = cfg_.layer_norm_backward_from_output ? NormBackward::FromOutput
                          : pre && cfg_.recompute_layer_norm   ? NormBackward::Recompute
                                                               : NormBackward::FromInput;
  s.norm_backward = nb;
  EmbeddingSpec es;
  es.side = s.side;
  es.vocab = decoder ? cfg_.tgt_vocab_size : cfg_.src_vocab_size;
  es.padding_idx = cfg_.padding_idx;
  es.scale = cfg_.scale_embedding != 0;
  es.learned_positions = cfg_.learned_positions != 0;
  es.dropout = cfg_.dropout;
  es.site = next_site_++;
  es.tokens = decoder ? prev_tokens : src_tokens;
  if (decoder && encdec && cfg_.share_all_embeddings) es.shared_table = encoder_.embed->table();
  es.output_saved = ResidualBlock::reads_input(pre, nb);
  s.embed = std::make_unique<EmbeddingLayer>(planner_, params_, prefix, dims_, es);
  if (decoder && encdec && cfg_.share_all_embeddings)
    params_.alias("decoder.embed_tokens.weight", "encoder.embed_tokens.weight");

  const BufferId self_pad = s.side == Side::Source ? src_pad : tgt_pad;
  const Activation act =
      cfg_.activation == LS_ACTIVATION_GELU ? Activation::GELU : Activation::ReLU;
  for (int i = 0; i < layers; ++i) {
    const std::string lp = prefix + ".layers." + std::to_string(i);
    AttentionSpec sa;
    sa.side = s.side;
    sa.causal = decoder;
    sa.dropout = cfg_.attention_dropout;
    sa.site = next_site_++;
    sa.key_pad = self_pad;
    sa.fused = fused_attention_available(cuda_, dt_, dims_.head_dim());
    s.blocks.push_back(std::make_unique<ResidualBlock>(
        planner_, params_, lp + ".self_attn_layer_norm", lp + ".self_attn_block", dims_, pre,
        cfg_.layer_norm_eps, cfg_.dropout, next_site_++,
        std::make_unique<Attention>(planner_, params_, lp + ".self_attn", dims_, sa), nb));
    if (decoder && encdec) {
      AttentionSpec ca;
      ca.side = Side::Target;
      ca.cross = true;
      ca.dropout = cfg_.attention_dropout;
      ca.site = next_site_++;
      ca.key_pad = src_pad;
      ca.memory = enc_out;
      ca.d_memory = d_enc_out;
      ca.fused = sa.fused;
      s.blocks.push_back(std::make_unique<ResidualBlock>(
          planner_, params_, lp + ".encoder_attn_layer_norm", lp + ".encoder_attn_block", dims_,
          pre, cfg_.layer_norm_eps, cfg_.dropout, next_site_++,
          std::make_unique<Attention>(planner_, params_, lp + ".encoder_attn", dims_, ca), nb));
    }
    const uint32_t ffn_block_site = next_site_++, ffn_act_site = next_site_++;
    s.blocks.push_back(std::make_unique<ResidualBlock>(
        planner_, params_, lp + ".final_layer_norm", lp + ".ffn_block", dims_, pre,
        cfg_.layer_norm_eps, cfg_.dropout, ffn_block_site,
        std::make_unique<FeedForward>(planner_, params_, lp, dims_, s.side, act,
                                      cfg_.activation_dropout, ffn_act_site),
        nb));
  }
  if (pre) {  // pre-LN stacks end with a LayerNorm
    s.final_norm = true;
    ParamInit ones;
    ones.kind = InitKind::Ones;
    const int64_t d = cfg_.hidden_size;
    s.norm_gamma = params_.add(prefix + ".layer_norm.weight", {d}, ones);
    s.norm_beta = params_.add(prefix + ".layer_norm.bias", {d}, ParamInit{});
    const size_t T = static_cast<size_t>(cfg_.max_batch_tokens);
    const size_t e = dtype_size(dt_), a = dtype_size(acc_);
    s.norm_out =
        planner_.declare(prefix + ".layer_norm.out", MemCategory::SavedActivations, T * d * e);
    s.norm_mean = planner_.declare(
        prefix + ".layer_norm.mean",
        nb == NormBackward::FromOutput ? MemCategory::Temporaries : MemCategory::SavedActivations,
        T * a);
    s.norm_rstd =
        planner_.declare(prefix + ".layer_norm.rstd", MemCategory::SavedActivations, T * a);
    s.d_norm_in =
        planner_.declare(prefix + ".layer_norm.d_in", MemCategory::Temporaries, T * d * e);
  }
}

void TransformerGraph::stack_forward(RunCtx& rc, Stack& s) {
  s.embed->forward(rc);
  BufferId x = s.embed->output();
  // Pre-LN: each block's residual add also writes the next LayerNorm (the next block's, then the
  // stack's final one), which then does not run on its own.
  const bool pre = cfg_.pre_layer_norm != 0;
  const NormTarget final_norm{s.norm_gamma, s.norm_beta, s.norm_out,
                              s.norm_mean,  s.norm_rstd, cfg_.layer_norm_eps};
  for (size_t i = 0; i < s.blocks.size(); ++i) {
    NormTarget next;
    const NormTarget* fused = nullptr;
    if (pre && i + 1 < s.blocks.size()) {
      next = s.blocks[i + 1]->input_norm();
      fused = &next;
    } else if (pre && s.final_norm) {
      fused = &final_norm;
    }
    s.blocks[i]->forward(rc, x, fused, pre && i > 0);
    x = s.blocks[i]->output();
  }
  if (s.final_norm && s.blocks.empty())
    rc.ops().layernorm_forward(rc.ptr(x), rc.wv.w(s.norm_gamma), rc.wv.w(s.norm_beta),
                               rc.ptr(s.norm_out), rc.ptr(s.norm_mean), rc.ptr(s.norm_rstd),
                               rc.tokens(s.side), cfg_.hidden_size, cfg_.layer_norm_eps, dt_);
}

void TransformerGraph::stack_backward(RunCtx& rc, Stack& s, BufferId d_out, bool deterministic) {
  BufferId d = d_out;
  if (s.final_norm) {
    if (s.norm_backward == NormBackward::FromOutput)
      rc.ops().layernorm_backward_from_output(
          rc.ptr(d_out), rc.ptr(s.norm_out), rc.wv.w(s.norm_gamma), rc.wv.w(s.norm_beta),
          rc.ptr(s.norm_rstd), nullptr, rc.ptr(s.d_norm_in), rc.wv.g(s.norm_gamma),
          rc.wv.g(s.norm_beta), rc.tokens(s.side), cfg_.hidden_size, dt_);
    else
      rc.ops().layernorm_backward(rc.ptr(d_out), rc.ptr(s.last_output()), rc.wv.w(s.norm_gamma),
                                  rc.ptr(s.norm_mean), rc.ptr(s.norm_rstd), nullptr,
                                  rc.ptr(s.d_norm_in), rc.wv.g(s.norm_gamma), rc.wv.g(s.norm_beta),
                                  rc.tokens(s.side), cfg_.hidden_size, dt_);
    d = s.d_norm_in;
  }
  for (size_t i = s.blocks.size(); i-- > 0;) {
    BufferId in = i == 0 ? s.embed->output() : s.blocks[i - 1]->output();
    s.blocks[i]->backward(rc, in, d);
    d = s.blocks[i]->d_input();
  }
  s.embed->backward(rc, d, deterministic);
}

void TransformerGraph::encode(RunCtx& rc) {
  stack_forward(rc, encoder_);
}

void TransformerGraph::decode_hidden(RunCtx& rc) {
  stack_forward(rc, decoder_);
}

void TransformerGraph::forward(RunCtx& rc) {
  if (encoder_decoder()) stack_forward(rc, encoder_);
  stack_forward(rc, decoder_);
  criterion(rc);
}

// The output projection and the criterion, chunk by chunk over the target rows [r0, r0 + rows)
// (every chunk but the last has criterion_rows rows). Training runs the criterion's backward
// inside the loop, so the logits buffer only ever holds one chunk:
//   logits[rows, V]  = hidden[r0 : r0 + rows] W^T
//   sums += CE(logits, target[r0 :]), lse[r0 :] = logsumexp(logits)
//   d_logits = grad_scale * (softmax(logits) - q)                           (in place)
//   dW      += d_logits^T hidden[r0 : r0 + rows]                            (fp32/acc)
//   d_dec_out[r0 : r0 + rows] = d_logits W
// Row offsets are multiples of the chunk's rows (a multiple of 8 unless a single chunk covers
// everything), so chunk pointers keep 16-byte alignment. The sums get one += per chunk, in
// chunk order (deterministic for a fixed chunking); dW gets one GEMM accumulation per chunk in
// chunk order.
// With rc.fresh_gradients the logits go to the criterion's scratch in the gradient buffer, in
// chunks of criterion_scratch_chunk_rows(Tt) rows, and the scratch is zeroed after the last
// chunk; otherwise they go to the planned logits buffer in chunks of criterion_rows.
void TransformerGraph::criterion(RunCtx& rc) {
  Ops& ops = rc.ops();
  const bool train = rc.training;
  const int64_t Tt = rc.tokens(Side::Target), V = cfg_.tgt_vocab_size, d = cfg_.hidden_size;
  const size_t e = dtype_size(dt_), a = dtype_size(acc_);
  const auto* hidden = static_cast<const std::byte*>(rc.ptr(dec_hidden));
  const bool scratch = train && rc.fresh_gradients && criterion_scratch.rows > 0;
  std::byte* scratch_ptr =
      scratch ? static_cast<std::byte*>(rc.wv.grad) + criterion_scratch.begin * a : nullptr;
  void* lg = scratch ? scratch_ptr : rc.ptr(logits);
  const int64_t chunk_rows = scratch ? criterion_scratch_chunk_rows(Tt) : criterion_rows;
  const auto* tgt = static_cast<const int32_t*>(rc.ptr(target));
  auto* lse_rows = static_cast<std::byte*>(rc.ptr(lse));
  auto* sums = static_cast<std::byte*>(rc.ptr(scalars));
  const void* grad_scale = sums + kGradScale * a;
  const void* w = rc.wv.w(output_projection);
  void* dw = train ? rc.wv.g(output_projection) : nullptr;
  auto* d_hidden = train ? static_cast<std::byte*>(rc.ptr(d_dec_out)) : nullptr;
  for (int64_t r0 = 0; r0 < Tt; r0 += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, Tt - r0);
    const std::byte* x = hidden + static_cast<size_t>(r0 * d) * e;
    void* lse_c = lse_rows + static_cast<size_t>(r0) * a;
    Linear::forward(ops, dt_, x, w, lg, rows, d, V);
    if (!train) {
      ops.cross_entropy_forward(lg, tgt + r0, lse_c, sums, rows, V, cfg_.padding_idx,
                                cfg_.label_smoothing, dt_);
      continue;
    }
    ops.cross_entropy_forward_backward(lg, tgt + r0, lse_c, sums, grad_scale, lg, rows, V,
                                       cfg_.padding_idx, cfg_.label_smoothing, dt_);
    Linear::backward_weight(ops, dt_, lg, x, dw, nullptr, rows, d, V,
                            r0 == 0 ? rc.weight_grad_beta() : 1.f);
    // The dry run (max_seq_len target rows) may run this body once where a real step runs it
    // for several chunks: keep every buffer of the body alive up to its last operation, so no
    // buffer can share their bytes between two chunks. (d_dec_out and logits are alive from
    // the first chunk's GEMM to the last chunk's backward_data through the fetches above.)
    rc.ptr(dec_hidden);
    rc.ptr(lse);
    Linear::backward_data(ops, dt_, lg, w, d_hidden + static_cast<size_t>(r0 * d) * e, rows, d, V);
  }
  if (scratch && !grad_zero_after_criterion.empty())
    ops.zero_ranges(
        rc.wv.grad,
        static_cast<const uint64_t*>(rc.ptr(grad_zero_ranges)) + grad_zero_before.size(),
        static_cast<int64_t>(grad_zero_after_criterion.size() / 2), grad_zero_max_elements, a);
  last_criterion_chunks = (Tt + chunk_rows - 1) / chunk_rows;
  last_criterion_in_scratch = scratch;
  criterion_backward_done_ = train;
}

void TransformerGraph::backward(RunCtx& rc, bool deterministic) {
  LS_REQUIRE(criterion_backward_done_, LS_ERR_INTERNAL,
             "TransformerGraph::backward needs a training forward first (it runs the "
             "criterion's backward)");
  criterion_backward_done_ = false;
  const int64_t d = cfg_.hidden_size;
  if (encoder_decoder())
    rc.ops().zero(rc.ptr(d_enc_out),
                  static_cast<size_t>(rc.tokens(Side::Source) * d) * dtype_size(dt_));
  stack_backward(rc, decoder_, d_dec_out, deterministic);
  if (encoder_decoder()) stack_backward(rc, encoder_, d_enc_out, deterministic);
}

Plan TransformerGraph::plan_schedule() {
  Exec ex(planner_);
  RunCtx rc;
  rc.ex = &ex;
  rc.wv.dt = dt_;
  rc.wv.acc = acc_;
  // Placeholder weights: ScheduleOps never dereferences them.
  rc.wv.master = rc.wv.work = rc.wv.grad = reinterpret_cast<std::byte*>(uintptr_t{0x10000});
  rc.shape = {1, cfg_.max_seq_len, cfg_.max_seq_len};
  rc.training = true;
  forward(rc);
  backward(rc, true);
  return planner_.plan();
}

}  // namespace ls
