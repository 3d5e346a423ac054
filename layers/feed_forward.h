// Feed-forward sublayer: fc2(dropout(act(fc1(x)))) without fc2's bias (fused by the residual
// block). fc1's bias rides in the GEMM epilogue. Saved for backward: one [T, ffn] tensor.
// - ReLU: fc2's input h = dropout(relu(pre)) itself (fc1 writes into it, the activation and
//   dropout run in place). h > 0 exactly where relu' = 1 and the element was kept, so the
//   backward needs neither pre nor the Philox mask (relu_dropout_backward_from_output).
// - GELU: the pre-activation; h is recomputed in backward from it and the Philox key, trading
//   one elementwise pass for T x ffn elements of memory.
// Parameters (fairseq names): fc1.weight [ffn, d], fc1.bias [ffn], fc2.weight [d, ffn],
// fc2.bias [d].
#pragma once

#include <string>

#include "layers/layer_common.h"

namespace ls {

class FeedForward final : public Sublayer {
 public:
  FeedForward(Planner& planner, ParamSet& params, const std::string& prefix, const LayerDims& dims,
              Side side, Activation act, float activation_dropout, uint32_t site);
  void forward(RunCtx& rc, BufferId in, BufferId out) override;
  void backward(RunCtx& rc, BufferId d_out, BufferId d_in, float beta) override;
  void input_weight_backward(RunCtx& rc, BufferId in) override;  // fc1.weight
  ParamRef out_bias() const override { return b2_; }
  Side side() const override { return side_; }

 private:
  LayerDims dims_;
  Side side_;
  Activation act_;
  float dropout_;
  uint32_t site_;
  ParamRef w1_, b1_, w2_, b2_;
  BufferId pre_, hidden_, d_hidden_;
};

}  // namespace ls
