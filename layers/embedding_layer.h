// Token embedding (x scale) + positions (fairseq sinusoidal, or a learned table) + dropout.
// Parameters: <prefix>.embed_tokens.weight [V, d] (N(0, d^-1/2), padding row zero), and with
// learned positions <prefix>.embed_positions.weight [max_len + padding_idx + 1, d].
// The table may be shared (tied) with another embedding or the output projection.
#pragma once

#include <string>

#include "layers/layer_common.h"

namespace ls {

struct EmbeddingSpec {
  Side side = Side::Source;
  int64_t vocab = 0;
  int32_t padding_idx = 1;
  bool scale = true;  // x sqrt(d)
  bool learned_positions = false;
  float dropout = 0.f;
  uint32_t site = 0;
  BufferId tokens;           // [B, L] int32 (persistent input buffer)
  ParamRef shared_table;     // when valid, use this table instead of declaring one
  bool output_saved = true;  // whether the first block's backward reads output() (else it is
                             // a temporary of forward, for the memory report)
};

class EmbeddingLayer {
 public:
  EmbeddingLayer(Planner& planner, ParamSet& params, const std::string& prefix,
                 const LayerDims& dims, const EmbeddingSpec& spec);
  void forward(RunCtx& rc);
  // d_out: gradient of output() [T, d]; accumulates into the table (and positions).
  void backward(RunCtx& rc, BufferId d_out, bool deterministic);
  BufferId output() const { return out_; }
  ParamRef table() const { return table_; }
  int64_t max_positions() const { return max_positions_; }

 private:
  EmbeddingArgs args(RunCtx& rc);
  LayerDims dims_;
  EmbeddingSpec spec_;
  ParamRef table_, positions_;
  int64_t max_positions_ = 0;
  BufferId out_;
};

}  // namespace ls
