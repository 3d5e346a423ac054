// A residual block around a sublayer, the unit encoder and decoder layers are made of:
//   pre-LN:  y = x + dropout(f(LN(x)) + b)
//   post-LN: y = LN(x + dropout(f(x) + b))
// where b is the sublayer's output bias, fused with dropout and the residual add
// (bias_dropout_residual) in forward and with the bias gradient in backward.
// LayerNorm parameters: <prefix>.weight [d] (ones), <prefix>.bias [d] (zeros).
#pragma once

#include <memory>
#include <string>

#include "layers/layer_common.h"

namespace ls {

class ResidualBlock {
 public:
  ResidualBlock(Planner& planner, ParamSet& params, const std::string& norm_prefix,
                const std::string& buffer_prefix, const LayerDims& dims, bool pre_norm,
                float eps, float dropout, uint32_t site, std::unique_ptr<Sublayer> sublayer);
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
  float eps_, dropout_;
  uint32_t site_;
  std::unique_ptr<Sublayer> sub_;
  ParamRef gamma_, beta_;
  BufferId norm_, mean_, rstd_;  // pre-LN: LN(x); post-LN: the LN's input x + dropout(...)
  BufferId sub_out_, out_, d_sub_, d_norm_, d_in_;
};

}  // namespace ls
