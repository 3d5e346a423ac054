#include "layers/embedding_layer.h"

#include <cmath>

namespace ls {

EmbeddingLayer::EmbeddingLayer(Planner& planner, ParamSet& params, const std::string& prefix,
                               const LayerDims& dims, const EmbeddingSpec& spec)
    : dims_(dims), spec_(spec) {
  const int64_t d = dims.hidden;
  ParamInit normal;
  normal.kind = InitKind::Normal;
  normal.std = 1.0 / std::sqrt(static_cast<double>(d));
  normal.padding_row = spec.padding_idx;
  if (spec.shared_table.valid()) {
    table_ = spec.shared_table;
  } else {
    table_ = params.add(prefix + ".embed_tokens.weight", {spec.vocab, d}, normal);
  }
  max_positions_ = dims.max_len + spec.padding_idx + 1;
  if (spec.learned_positions)
    positions_ = params.add(prefix + ".embed_positions.weight", {max_positions_, d}, normal);
  out_ =
      planner.declare(prefix + ".embed_out",
                      spec.output_saved ? MemCategory::SavedActivations : MemCategory::Temporaries,
                      static_cast<size_t>(dims.max_tokens * d) * dtype_size(dims.dt));
}

EmbeddingArgs EmbeddingLayer::args(RunCtx& rc) {
  EmbeddingArgs a;
  a.tokens = static_cast<const int32_t*>(rc.ptr(spec_.tokens));
  a.batch = rc.shape.batch;
  a.len = rc.len(spec_.side);
  a.dim = dims_.hidden;
  a.vocab = spec_.vocab;
  a.padding_idx = spec_.padding_idx;
  a.scale = spec_.scale ? std::sqrt(static_cast<float>(dims_.hidden)) : 1.f;
  a.learned_positions = positions_.valid() ? rc.wv.w(positions_) : nullptr;
  a.max_positions = max_positions_;
  a.dt = rc.dt();
  a.dropout = rc.rate(spec_.dropout);
  a.key = rc.key(spec_.site);
  return a;
}

void EmbeddingLayer::forward(RunCtx& rc) {
  EmbeddingArgs a = args(rc);
  rc.ops().embedding_forward(a, rc.wv.w(table_), rc.ptr(out_));
}

void EmbeddingLayer::backward(RunCtx& rc, BufferId d_out, bool deterministic) {
  EmbeddingArgs a = args(rc);
  rc.ops().embedding_backward(a, rc.ptr(d_out), rc.wv.g(table_),
                              positions_.valid() ? rc.wv.g(positions_) : nullptr, deterministic);
}

}  // namespace ls
