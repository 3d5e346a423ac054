#include "layers/residual_block.h"

#include "runtime/error.h"

namespace ls {

ResidualBlock::ResidualBlock(Planner& planner, ParamSet& params, const std::string& norm_prefix,
                             const std::string& buffer_prefix, const LayerDims& dims, bool pre_norm,
                             float eps, float dropout, uint32_t site,
                             std::unique_ptr<Sublayer> sublayer, NormBackward norm_backward)
    : dims_(dims),
      pre_norm_(pre_norm),
      recompute_(pre_norm && norm_backward == NormBackward::Recompute),
      from_output_(norm_backward == NormBackward::FromOutput),
      eps_(eps),
      dropout_(dropout),
      site_(site),
      sub_(std::move(sublayer)) {
  const int64_t d = dims.hidden;
  ParamInit ones;
  ones.kind = InitKind::Ones;
  gamma_ = params.add(norm_prefix + ".weight", {d}, ones);
  beta_ = params.add(norm_prefix + ".bias", {d}, ParamInit{});
  const size_t td = static_cast<size_t>(dims.max_tokens * d) * dtype_size(dims.dt);
  const size_t stats = static_cast<size_t>(dims.max_tokens) * dtype_size(accum_dtype(dims.dt));
  const std::string p = buffer_prefix + ".";
  const auto S = MemCategory::SavedActivations, Tmp = MemCategory::Temporaries;
  // Recomputed LN(x): two short-lived temporaries (forward: LN -> sublayer forward; backward:
  // LayerNorm backward -> the sublayer's input weight gradients) instead of one saved buffer
  // alive from forward to backward.
  // From the output: post-LN's LN input and both modes' mean are read in forward only.
  const bool norm_saved = pre_norm ? !recompute_ : !from_output_;
  norm_ = planner.declare(p + (pre_norm ? "ln_out" : "ln_in"), norm_saved ? S : Tmp, td);
  if (recompute_) norm_re_ = planner.declare(p + "ln_out_recomputed", Tmp, td);
  mean_ = planner.declare(p + "ln_mean", from_output_ ? Tmp : S, stats);
  rstd_ = planner.declare(p + "ln_rstd", S, stats);
  sub_out_ = planner.declare(p + "sub_out", Tmp, td);
  // The output is the next block's (or the final LayerNorm's) input: saved when that reads it in
  // backward, which a pre-LN LayerNorm working from its output does not.
  out_ = planner.declare(p + "out", reads_input(pre_norm, norm_backward) ? S : Tmp, td);
  d_sub_ = planner.declare(p + "d_sub", Tmp, td);
  d_norm_ = planner.declare(p + "d_ln", Tmp, td);
  d_in_ = planner.declare(p + "d_in", Tmp, td);
}

void ResidualBlock::forward(RunCtx& rc, BufferId in, const NormTarget* next, bool input_normed) {
  Ops& ops = rc.ops();
  const DType dt = rc.dt();
  const int64_t T = rc.tokens(side()), d = dims_.hidden;
  const float p = rc.rate(dropout_);
  LS_REQUIRE(pre_norm_ || (next == nullptr && !input_normed), LS_ERR_INTERNAL,
             "ResidualBlock::forward: a post-LN block neither writes nor reads a fused LayerNorm");
  if (pre_norm_) {
    if (!input_normed)
      ops.layernorm_forward(rc.ptr(in), rc.wv.w(gamma_), rc.wv.w(beta_), rc.ptr(norm_),
                            rc.ptr(mean_), rc.ptr(rstd_), T, d, eps_, dt);
    sub_->forward(rc, norm_, sub_out_);
    if (next != nullptr)
      ops.bias_dropout_residual_layernorm_forward(
          rc.ptr(sub_out_), rc.wv.w(sub_->out_bias()), rc.ptr(in), rc.ptr(out_),
          rc.wv.w(next->gamma), rc.wv.w(next->beta), rc.ptr(next->out), rc.ptr(next->mean),
          rc.ptr(next->rstd), T, d, p, rc.key(site_), next->eps, dt);
    else
      ops.bias_dropout_residual_forward(rc.ptr(sub_out_), rc.wv.w(sub_->out_bias()), rc.ptr(in),
                                        rc.ptr(out_), T, d, p, rc.key(site_), dt);
  } else {
    sub_->forward(rc, in, sub_out_);
    ops.bias_dropout_residual_layernorm_forward(rc.ptr(sub_out_), rc.wv.w(sub_->out_bias()),
                                                rc.ptr(in), rc.ptr(norm_), rc.wv.w(gamma_),
                                                rc.wv.w(beta_), rc.ptr(out_), rc.ptr(mean_),
                                                rc.ptr(rstd_), T, d, p, rc.key(site_), eps_, dt);
  }
}

void ResidualBlock::backward(RunCtx& rc, BufferId in, BufferId d_out) {
  Ops& ops = rc.ops();
  const DType dt = rc.dt();
  const int64_t T = rc.tokens(side()), d = dims_.hidden;
  const float p = rc.rate(dropout_);
  if (pre_norm_) {
    ops.dropout_bias_backward(rc.ptr(d_out), rc.ptr(d_sub_), rc.wv.g(sub_->out_bias()), T, d, p,
                              rc.key(site_), dt);
    sub_->backward(rc, d_sub_, d_norm_, 0.f);
    if (recompute_)  // also writes LN(x) again, bit for bit what forward fed the sublayer
      ops.layernorm_backward_with_output(rc.ptr(d_norm_), rc.ptr(in), rc.wv.w(gamma_),
                                         rc.wv.w(beta_), rc.ptr(mean_), rc.ptr(rstd_),
                                         rc.ptr(d_out), rc.ptr(d_in_), rc.ptr(norm_re_),
                                         rc.wv.g(gamma_), rc.wv.g(beta_), T, d, dt);
    else if (from_output_)
      ops.layernorm_backward_from_output(rc.ptr(d_norm_), rc.ptr(norm_), rc.wv.w(gamma_),
                                         rc.wv.w(beta_), rc.ptr(rstd_), rc.ptr(d_out),
                                         rc.ptr(d_in_), rc.wv.g(gamma_), rc.wv.g(beta_), T, d, dt);
    else
      ops.layernorm_backward(rc.ptr(d_norm_), rc.ptr(in), rc.wv.w(gamma_), rc.ptr(mean_),
                             rc.ptr(rstd_), rc.ptr(d_out), rc.ptr(d_in_), rc.wv.g(gamma_),
                             rc.wv.g(beta_), T, d, dt);
    sub_->input_weight_backward(rc, recompute_ ? norm_re_ : norm_);
  } else {
    if (from_output_)
      ops.layernorm_backward_from_output(rc.ptr(d_out), rc.ptr(out_), rc.wv.w(gamma_),
                                         rc.wv.w(beta_), rc.ptr(rstd_), nullptr, rc.ptr(d_norm_),
                                         rc.wv.g(gamma_), rc.wv.g(beta_), T, d, dt);
    else
      ops.layernorm_backward(rc.ptr(d_out), rc.ptr(norm_), rc.wv.w(gamma_), rc.ptr(mean_),
                             rc.ptr(rstd_), nullptr, rc.ptr(d_norm_), rc.wv.g(gamma_),
                             rc.wv.g(beta_), T, d, dt);
    ops.dropout_bias_backward(rc.ptr(d_norm_), rc.ptr(d_sub_), rc.wv.g(sub_->out_bias()), T, d, p,
                              rc.key(site_), dt);
    ops.copy(rc.ptr(d_in_), rc.ptr(d_norm_), static_cast<size_t>(T * d) * dtype_size(dt));
    sub_->backward(rc, d_sub_, d_in_, 1.f);
    sub_->input_weight_backward(rc, in);
  }
}

}  // namespace ls
