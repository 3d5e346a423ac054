// A residual block around a sublayer, the unit encoder and decoder layers are made of:
//   pre-LN:  y = x + dropout(f(LN(x)) + b)
//   post-LN: y = LN(x + dropout(f(x) + b))
// where b is the sublayer's output bias, fused with dropout and the residual add
// (bias_dropout_residual) in forward and with the bias gradient in backward.
// LayerNorm parameters: <prefix>.weight [d] (ones), <prefix>.bias [d] (zeros).
//
// What the block's LayerNorm keeps for backward (NormBackward):
// - FromInput (default): its input x (pre-LN: the block input; post-LN: x + dropout(f(x) + b))
//   and mean/rstd; pre-LN also keeps LN(x) for the sublayer's backward.
// - Recompute (pre-LN only; post-LN ignores it, its LN input must be saved anyway): LN(x) is not
//   kept for backward. Forward writes it to a temporary that dies after the sublayer's forward.
//   The sublayer needs it in backward only for the weight gradients of its input projections,
//   so the block runs the sublayer's backward, then the LayerNorm backward, which reads x anyway
//   and also writes LN(x) from x and the saved mean/rstd (the forward's expression, so the same
//   bits) into a second temporary, then the sublayer's input weight gradients from it.
// - FromOutput: the LayerNorm backward recovers xhat = (y - beta) / gamma from its output y,
//   which is kept anyway (pre-LN: LN(x), the sublayer's input; post-LN: the block output, the
//   next block's input), so the LN input is not kept: pre-LN blocks keep no block input (the
//   previous block's output dies in forward), post-LN blocks no x + dropout(f(x) + b). rstd stays
//   saved, mean is not read.
//
// The residual add and the LayerNorm that reads its result run as one op
// (bias_dropout_residual_layernorm_forward, one pass where there were two; the same bits). Post-LN:
// the block's own. Pre-LN: the next LayerNorm's input is this block's output, so the block's
// residual add writes that LayerNorm's output too: forward(rc, in, &next) with next the following
// block's input_norm() (or the stack's final LayerNorm), and the following block's
// forward(..., input_normed = true) skips its own.
#pragma once

#include <memory>
#include <string>

#include "layers/layer_common.h"

namespace ls {

enum class NormBackward { FromInput, Recompute, FromOutput };

// A LayerNorm's parameters and what its forward writes: the output and the saved statistics.
struct NormTarget {
  ParamRef gamma, beta;
  BufferId out, mean, rstd;
  float eps = 1e-5f;
};

class ResidualBlock {
 public:
  ResidualBlock(Planner& planner, ParamSet& params, const std::string& norm_prefix,
                const std::string& buffer_prefix, const LayerDims& dims, bool pre_norm, float eps,
                float dropout, uint32_t site, std::unique_ptr<Sublayer> sublayer,
                NormBackward norm_backward = NormBackward::FromInput);
  // Whether backward reads the block input `in` (what the previous block or the embedding must
  // keep): not for a pre-LN block whose LayerNorm works from its output.
  static bool reads_input(bool pre_norm, NormBackward nb) {
    return !(pre_norm && nb == NormBackward::FromOutput);
  }
  // in: [T, d] -> output(): [T, d]. next (pre-LN only, may be null): the LayerNorm that reads
  // output() next, written by this block's residual add. input_normed (pre-LN only): the
  // previous block already wrote this block's LayerNorm of `in` (input_norm()).
  void forward(RunCtx& rc, BufferId in, const NormTarget* next = nullptr,
               bool input_normed = false);
  // Pre-LN: the block's own LayerNorm of its input, for the previous block to write.
  NormTarget input_norm() const { return NormTarget{gamma_, beta_, norm_, mean_, rstd_, eps_}; }
  // d_out: gradient of output() -> d_input(): gradient of in.
  void backward(RunCtx& rc, BufferId in, BufferId d_out);
  BufferId output() const { return out_; }
  BufferId d_input() const { return d_in_; }
  Side side() const { return sub_->side(); }

 private:
  LayerDims dims_;
  bool pre_norm_;
  bool recompute_;    // pre-LN with LN(x) recomputed in backward
  bool from_output_;  // LayerNorm backward from its output
  float eps_, dropout_;
  uint32_t site_;
  std::unique_ptr<Sublayer> sub_;
  ParamRef gamma_, beta_;
  BufferId norm_, mean_, rstd_;  // pre-LN: LN(x); post-LN: the LN's input x + dropout(...)
  BufferId sub_out_, out_, d_sub_, d_norm_, d_in_;
  // recompute_ only: LN(x) recomputed by the LayerNorm backward.
  BufferId norm_re_;
};

}  // namespace ls
