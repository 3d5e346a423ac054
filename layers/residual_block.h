// A residual block around a sublayer, the unit encoder and decoder layers are made of:
//   pre-LN:  y = x + dropout(f(LN(x)) + b)
//   post-LN: y = LN(x + dropout(f(x) + b))
// where b is the sublayer's output bias, fused with dropout and the residual add
// (bias_dropout_residual) in forward and with the bias gradient in backward.
// LayerNorm parameters: <prefix>.weight [d] (ones), <prefix>.bias [d] (zeros).
//
// recompute_norm (pre-LN only; ignored for post-LN, whose LN input must be saved anyway): LN(x)
// is not kept for backward. Forward writes it to a temporary that dies after the sublayer's
// forward; backward recomputes it (one LayerNorm forward of the saved block input x, the same
// computation, so the same bits) into a second temporary just before the sublayer's backward.
// The saved state drops from x-sized LN(x) + mean/rstd to mean/rstd alone; mean/rstd stay
// saved (LayerNorm backward reads them), and the recompute's own statistics go to small
// temporaries, so backward never writes saved state.
#pragma once

#include <memory>
#include <string>

#include "layers/layer_common.h"

namespace ls {

class ResidualBlock {
 public:
  ResidualBlock(Planner& planner, ParamSet& params, const std::string& norm_prefix,
                const std::string& buffer_prefix, const LayerDims& dims, bool pre_norm, float eps,
                float dropout, uint32_t site, std::unique_ptr<Sublayer> sublayer,
                bool recompute_norm = false);
  // in: [T, d] -> output(): [T, d]
  void forward(RunCtx& rc, BufferId in);
  // d_out: gradient of output() -> d_input(): gradient of in.
  void backward(RunCtx& rc, BufferId in, BufferId d_out);
  BufferId output() const { return out_; }
  BufferId d_input() const { return d_in_; }
  Side side() const { return sub_->side(); }

 private:
  LayerDims dims_;
  bool pre_norm_;
  bool recompute_;  // pre-LN with LN(x) recomputed in backward
  float eps_, dropout_;
  uint32_t site_;
  std::unique_ptr<Sublayer> sub_;
  ParamRef gamma_, beta_;
  BufferId norm_, mean_, rstd_;  // pre-LN: LN(x); post-LN: the LN's input x + dropout(...)
  BufferId sub_out_, out_, d_sub_, d_norm_, d_in_;
  // recompute_ only: LN(x) recomputed in backward, and the recompute's statistics (unread).
  BufferId norm_re_, mean_re_, rstd_re_;
};

}  // namespace ls
