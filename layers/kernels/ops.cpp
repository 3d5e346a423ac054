// Defaults of the optional parts of the Ops interface (step capture, fused attention):
// backends without them refuse with LS_ERR_UNSUPPORTED; and which backends fuse attention.
#include "layers/kernels/ops.h"

#include <utility>

#include "runtime/error.h"

namespace ls {

void Ops::capture_begin() {
  LS_FAIL(LS_ERR_UNSUPPORTED, "capture_begin: this backend cannot capture a step (CUDA graphs)");
}
void* Ops::capture_end() {
  LS_FAIL(LS_ERR_UNSUPPORTED, "capture_end: this backend cannot capture a step (CUDA graphs)");
}
void Ops::graph_launch(void*) {
  LS_FAIL(LS_ERR_UNSUPPORTED, "graph_launch: this backend cannot replay a captured step");
}
void Ops::graph_destroy(void*) {}

void Ops::attention_forward(const AttentionArgs& a) {
  LS_FAIL(LS_ERR_UNSUPPORTED, "attention_forward: this backend has no fused attention for "
                                  << dtype_name(a.dt) << ", head_dim " << a.head_dim);
}
void Ops::attention_backward(const AttentionArgs& a, const void*, void*, void*, void*, void*,
                             void*) {
  LS_FAIL(LS_ERR_UNSUPPORTED, "attention_backward: this backend has no fused attention for "
                                  << dtype_name(a.dt) << ", head_dim " << a.head_dim);
}

bool check_attention_args(const AttentionArgs& a, const char* call) {
  for (auto [v, name] : {std::pair<int64_t, const char*>{a.batch, "batch"},
                         {a.heads, "heads"},
                         {a.len_q, "len_q"},
                         {a.len_k, "len_k"}})
    LS_CHECK_ARG(v >= 0, call << ": " << name << " = " << v << " is negative");
  LS_CHECK_ARG(a.head_dim > 0, call << ": head_dim = " << a.head_dim << " must be positive");
  LS_CHECK_ARG(a.dropout >= 0.f && a.dropout < 1.f,
               call << ": dropout probability " << a.dropout << " not in [0, 1)");
  const int64_t width = a.heads * a.head_dim;
  LS_CHECK_ARG(a.ld_q >= width && a.ld_k >= width && a.ld_v >= width && a.ld_ctx >= width,
               call << ": row strides (" << a.ld_q << ", " << a.ld_k << ", " << a.ld_v << ", "
                    << a.ld_ctx << ") shorter than heads x head_dim = " << width);
  if (a.batch * a.heads * a.len_q == 0) return false;
  auto nonnull = [&](const void* p, const char* name) {
    LS_CHECK_ARG(p != nullptr, call << ": " << name << " is null");
  };
  nonnull(a.q, "q");
  nonnull(a.ctx, "ctx");
  nonnull(a.lse, "lse");
  if (a.len_k > 0) {
    nonnull(a.k, "k");
    nonnull(a.v, "v");
  }
  return true;
}

bool check_attention_backward_args(const AttentionArgs& a, const void* d_ctx, const void* dq,
                                   const void* dk, const void* dv, const void* delta) {
  const char* call = "attention_backward";
  if (!check_attention_args(a, call)) return false;
  auto nonnull = [&](const void* p, const char* name) {
    LS_CHECK_ARG(p != nullptr, call << ": " << name << " is null");
  };
  nonnull(d_ctx, "d_ctx");
  nonnull(dq, "dq");
  if (a.len_k > 0) {  // no keys: dk and dv have no rows
    nonnull(dk, "dk");
    nonnull(dv, "dv");
  }
  nonnull(delta, "delta");
  return true;
}

bool fused_attention_available(bool cuda, DType dt, int64_t head_dim) {
  if (!cuda) return dt == DType::F32 || dt == DType::F64;
  return (dt == DType::F16 || dt == DType::BF16) && head_dim > 0 && head_dim % 8 == 0 &&
         head_dim <= kFusedAttentionMaxHeadDim;
}

}  // namespace ls
