// Multi-head attention as a sublayer: self-attention (fused QKV projection; optionally causal)
// or cross-attention (Q from this side, K/V projected from a memory such as the encoder
// output). Parameters follow PyTorch's nn.MultiheadAttention: in_proj_weight [3d, d] (rows
// q, k, v), in_proj_bias [3d], out_proj.weight [d, d], out_proj.bias [d].
//
// Two paths, chosen at creation (AttentionSpec::fused):
// - fused (flash-style, Ops::attention_forward/backward): the kernels read Q, K, V straight
//   from the projections' token-major outputs and write the context token-major. Saved for
//   backward: the projections ([T, 3d], or [Tq, d] + [Tk, 2d] for cross-attention), the
//   context [T, d] and the per-row log-sum-exp [B, H, Lq] (acc). Nothing of size Lq x Lk.
// - unfused: split into per-head Q/K/V [n, B, H, L, Dh], batched GEMMs and the softmax
//   kernels. Saved: the per-head Q/K/V, the softmax probabilities [B, H, Lq, Lk] (before
//   dropout: the dropped copy is regenerated from the Philox key), and the merged context.
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
  // Flash-style fused kernels (see above); the model sets it from
  // fused_attention_available(backend, dtype, head_dim).
  bool fused = false;
};

class Attention final : public Sublayer {
 public:
  Attention(Planner& planner, ParamSet& params, const std::string& prefix, const LayerDims& dims,
            const AttentionSpec& spec);
  void forward(RunCtx& rc, BufferId in, BufferId out) override;
  void backward(RunCtx& rc, BufferId d_out, BufferId d_in, float beta) override;
  // The query (self-attention: query, key and value) projection's weight gradient from `in`; the
  // unfused core's input bias gradient with it.
  void input_weight_backward(RunCtx& rc, BufferId in) override;
  ParamRef out_bias() const override { return out_b_; }
  Side side() const override { return spec_.side; }

 private:
  int64_t key_len(const RunCtx& rc) const {
    return spec_.cross ? rc.shape.src_len : rc.len(spec_.side);
  }

  LayerDims dims_;
  AttentionSpec spec_;
  ParamRef in_w_, in_b_, out_w_, out_b_;
  // forward
  BufferId q_lin_, kv_lin_;      // projections before the head split (temporaries)
  BufferId q_heads_, kv_heads_;  // saved; for self-attention q_heads_ holds all three
  BufferId probs_, dropped_, ctx_heads_, ctx_;
  // backward
  BufferId d_ctx_, d_ctx_heads_, d_probs_, d_q_heads_, d_kv_heads_, d_q_lin_, d_kv_lin_;
  // fused path
  BufferId lse_, delta_;

  // The fused kernels' arguments over this layer's buffers (the projections, ctx, lse).
  AttentionArgs fused_args(RunCtx& rc);
  // backward of the unfused core: d_ctx -> d_q_lin_ (and d_kv_lin_), token-major.
  void backward_unfused(RunCtx& rc, void* d_ctx);
  // The input projections' data gradients (into d_in, and cross-attention's d_memory) and the
  // key / value projection's weight gradient (cross-attention: it reads the memory, not `in`).
  void projections_backward(RunCtx& rc, BufferId d_in, float beta);
};

}  // namespace ls
