// Multi-head attention as a sublayer: self-attention (fused QKV projection; optionally causal)
// or cross-attention (Q from this side, K/V projected from a memory such as the encoder
// output). Parameters follow PyTorch's nn.MultiheadAttention: in_proj_weight [3d, d] (rows
// q, k, v), in_proj_bias [3d], out_proj.weight [d, d], out_proj.bias [d].
//
// Saved for backward: the per-head Q/K/V [n, B, H, L, Dh], the softmax probabilities
// [B, H, Lq, Lk] (before dropout: the dropped copy is regenerated from the Philox key), and
// the merged context [T, d] (the output projection's input).
#pragma once

#include <string>

#include "layers/layer_common.h"

namespace ls {

struct AttentionSpec {
  Side side = Side::Source;  // where queries come from
  bool cross = false;        // keys/values from `memory` (source side) instead of the input
  bool causal = false;
  float dropout = 0.f;  // on attention probabilities
  uint32_t site = 0;    // dropout site
  BufferId query_pad;   // [B, Lq] uint8 (unused by the kernels; kept for clarity)
  BufferId key_pad;     // [B, Lk] uint8, 1 = padding
  BufferId memory;      // cross only: [B*Ls, d]
  BufferId d_memory;    // cross only: gradient of memory, accumulated (+=)
};

class Attention final : public Sublayer {
 public:
  Attention(Planner& planner, ParamSet& params, const std::string& prefix, const LayerDims& dims,
            const AttentionSpec& spec);
  void forward(RunCtx& rc, BufferId in, BufferId out) override;
  void backward(RunCtx& rc, BufferId in, BufferId d_out, BufferId d_in, float beta) override;
  ParamRef out_bias() const override { return out_b_; }
  Side side() const override { return spec_.side; }

 private:
  int64_t key_len(const RunCtx& rc) const { return spec_.cross ? rc.shape.src_len : rc.len(spec_.side); }

  LayerDims dims_;
  AttentionSpec spec_;
  ParamRef in_w_, in_b_, out_w_, out_b_;
  // forward
  BufferId q_lin_, kv_lin_;    // projections before the head split (temporaries)
  BufferId q_heads_, kv_heads_;  // saved; for self-attention q_heads_ holds all three
  BufferId probs_, dropped_, ctx_heads_, ctx_;
  // backward
  BufferId d_ctx_, d_ctx_heads_, d_probs_, d_q_heads_, d_kv_heads_, d_q_lin_, d_kv_lin_;
};

}  // namespace ls
