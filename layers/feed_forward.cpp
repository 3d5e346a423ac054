#include "layers/feed_forward.h"

namespace ls {

FeedForward::FeedForward(Planner& planner, ParamSet& params, const std::string& prefix,
                         const LayerDims& dims, Side side, Activation act, float activation_dropout,
                         uint32_t site)
    : dims_(dims), side_(side), act_(act), dropout_(activation_dropout), site_(site) {
  const int64_t d = dims.hidden, F = dims.ffn;
  ParamInit xavier;
  xavier.kind = InitKind::XavierUniform;
  xavier.fan_in = d;
  xavier.fan_out = F;
  w1_ = params.add(prefix + ".fc1.weight", {F, d}, xavier);
  params.set_grad_overwritten(w1_);
  b1_ = params.add(prefix + ".fc1.bias", {F}, ParamInit{});
  w2_ = params.add(prefix + ".fc2.weight", {d, F}, xavier);
  params.set_grad_overwritten(w2_);
  b2_ = params.add(prefix + ".fc2.bias", {d}, ParamInit{});
  const size_t tf = static_cast<size_t>(dims.max_tokens * F) * dtype_size(dims.dt);
  if (act_ == Activation::ReLU) {
    // ReLU: the saved state is fc2's input itself; there is no pre-activation buffer.
    hidden_ = planner.declare(prefix + ".ffn_hidden", MemCategory::SavedActivations, tf);
  } else {
    pre_ = planner.declare(prefix + ".ffn_pre", MemCategory::SavedActivations, tf);
    hidden_ = planner.declare(prefix + ".ffn_hidden", MemCategory::Temporaries, tf);
  }
  d_hidden_ = planner.declare(prefix + ".d_ffn_hidden", MemCategory::Temporaries, tf);
}

void FeedForward::forward(RunCtx& rc, BufferId in, BufferId out) {
  Ops& ops = rc.ops();
  const DType dt = rc.dt();
  const int64_t T = rc.tokens(side_), d = dims_.hidden, F = dims_.ffn;
  void* hidden = rc.ptr(hidden_);
  // ReLU: fc1 writes into `hidden` and the activation/dropout runs in place over it.
  void* pre = act_ == Activation::ReLU ? hidden : rc.ptr(pre_);
  Linear::forward(ops, dt, rc.ptr(in), rc.wv.w(w1_), pre, T, d, F, Epilogue::Bias, rc.wv.w(b1_));
  ops.act_dropout_forward(pre, hidden, T, F, act_, rc.rate(dropout_), rc.key(site_), dt);
  Linear::forward(ops, dt, hidden, rc.wv.w(w2_), rc.ptr(out), T, F, d);
}

void FeedForward::backward(RunCtx& rc, BufferId d_out, BufferId d_in, float beta) {
  Ops& ops = rc.ops();
  const DType dt = rc.dt();
  const int64_t T = rc.tokens(side_), d = dims_.hidden, F = dims_.ffn;
  const float p = rc.rate(dropout_);
  void* hidden = rc.ptr(hidden_);
  void* d_hidden = rc.ptr(d_hidden_);
  void* dout = rc.ptr(d_out);
  const bool relu = act_ == Activation::ReLU;
  // GELU: recompute fc2's input from the saved pre-activation. ReLU saved it.
  if (!relu) ops.act_dropout_forward(rc.ptr(pre_), hidden, T, F, act_, p, rc.key(site_), dt);
  Linear::backward_weight(ops, dt, dout, hidden, rc.wv.g(w2_), nullptr, T, F, d,
                          rc.weight_grad_beta());
  Linear::backward_data(ops, dt, dout, rc.wv.w(w2_), d_hidden, T, F, d);
  // Through dropout and the activation (fc1's bias gradient in the same pass), then fc1.
  if (relu)
    ops.relu_dropout_backward_from_output(d_hidden, hidden, d_hidden, rc.wv.g(b1_), T, F, p, dt);
  else
    ops.act_dropout_backward(d_hidden, rc.ptr(pre_), d_hidden, rc.wv.g(b1_), T, F, act_, p,
                             rc.key(site_), dt);
  Linear::backward_data(ops, dt, d_hidden, rc.wv.w(w1_), rc.ptr(d_in), T, d, F, beta);
}

void FeedForward::input_weight_backward(RunCtx& rc, BufferId in) {
  const int64_t T = rc.tokens(side_), d = dims_.hidden, F = dims_.ffn;
  Linear::backward_weight(rc.ops(), rc.dt(), rc.ptr(d_hidden_), rc.ptr(in), rc.wv.g(w1_), nullptr,
                          T, d, F, rc.weight_grad_beta());
}

}  // namespace ls
