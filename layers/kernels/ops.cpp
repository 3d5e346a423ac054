// Defaults of the optional parts of the Ops interface (step capture, fused attention):
// backends without them refuse with LS_ERR_UNSUPPORTED; which backends fuse attention; and the
// argument checks both backends share.
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

void check_ptr(const void* p, const char* call, const char* name) {
  LS_CHECK_ARG(p != nullptr, call << ": " << name << " is null");
}

void check_nonneg(int64_t v, const char* call, const char* name) {
  LS_CHECK_ARG(v >= 0, call << ": " << name << " = " << v << " is negative");
}

void check_dropout(float p, const char* call) {
  LS_CHECK_ARG(p >= 0.f && p < 1.f, call << ": dropout probability " << p << " not in [0, 1)");
}

bool check_layernorm_args(const void* x, const void* gamma, const void* beta, const void* y,
                          const void* mean, const void* rstd, int64_t rows, int64_t cols, float eps,
                          const char* call) {
  check_nonneg(rows, call, "rows");
  LS_CHECK_ARG(cols > 0, call << ": cols = " << cols << " must be positive");
  LS_CHECK_ARG(eps >= 0.f, call << ": eps = " << eps << " must be >= 0");
  if (rows == 0) return false;
  for (auto [ptr, name] : {std::pair<const void*, const char*>{x, "x"},
                           {gamma, "gamma"},
                           {beta, "beta"},
                           {y, "y"},
                           {mean, "mean"},
                           {rstd, "rstd"}})
    check_ptr(ptr, call, name);
  return true;
}

void check_residual_layernorm_args(const void* x, const void* residual, const void* out,
                                   const void* gamma, const void* beta, const void* y,
                                   const void* mean, const void* rstd, int64_t rows, int64_t cols,
                                   float p, float eps, const char* call) {
  check_dropout(p, call);
  if (!check_layernorm_args(x, gamma, beta, y, mean, rstd, rows, cols, eps, call)) return;
  check_ptr(residual, call, "residual");
  check_ptr(out, call, "out");
  LS_CHECK_ARG(y != x && y != residual && y != out,
               call << ": y must not alias x, residual or out (the LayerNorm reads all of out)");
}

void check_activation(Activation act, const char* call) {
  LS_CHECK_ARG(act == Activation::ReLU || act == Activation::GELU,
               call << ": unknown activation " << static_cast<int>(act));
}

void check_embedding_args(const EmbeddingArgs& a, const char* call) {
  check_nonneg(a.batch, call, "batch");
  check_nonneg(a.len, call, "len");
  LS_CHECK_ARG(a.dim > 0, call << ": dim = " << a.dim << " must be positive");
  LS_CHECK_ARG(a.vocab > 0, call << ": vocab = " << a.vocab << " must be positive");
  check_dropout(a.dropout, call);
  if (a.learned_positions) {
    LS_CHECK_ARG(a.max_positions > 0,
                 call << ": learned positions need max_positions > 0, got " << a.max_positions);
  } else {
    // fairseq's sinusoid divides by half_dim - 1.
    LS_CHECK_ARG(a.dim >= 4, call << ": sinusoidal positions need dim >= 4, got " << a.dim);
  }
  if (a.batch * a.len > 0) check_ptr(a.tokens, call, "tokens");
}

bool check_attention_args(const AttentionArgs& a, const char* call) {
  for (auto [v, name] : {std::pair<int64_t, const char*>{a.batch, "batch"},
                         {a.heads, "heads"},
                         {a.len_q, "len_q"},
                         {a.len_k, "len_k"}})
    check_nonneg(v, call, name);
  LS_CHECK_ARG(a.head_dim > 0, call << ": head_dim = " << a.head_dim << " must be positive");
  check_dropout(a.dropout, call);
  const int64_t width = a.heads * a.head_dim;
  LS_CHECK_ARG(a.ld_q >= width && a.ld_k >= width && a.ld_v >= width && a.ld_ctx >= width,
               call << ": row strides (" << a.ld_q << ", " << a.ld_k << ", " << a.ld_v << ", "
                    << a.ld_ctx << ") shorter than heads x head_dim = " << width);
  if (a.batch * a.heads * a.len_q == 0) return false;
  check_ptr(a.q, call, "q");
  check_ptr(a.ctx, call, "ctx");
  check_ptr(a.lse, call, "lse");
  if (a.len_k > 0) {
    check_ptr(a.k, call, "k");
    check_ptr(a.v, call, "v");
  }
  return true;
}

bool check_attention_backward_args(const AttentionArgs& a, const void* d_ctx, const void* dq,
                                   const void* dk, const void* dv, const void* delta) {
  const char* call = "attention_backward";
  if (!check_attention_args(a, call)) return false;
  check_ptr(d_ctx, call, "d_ctx");
  check_ptr(dq, call, "dq");
  if (a.len_k > 0) {  // no keys: dk and dv have no rows
    check_ptr(dk, call, "dk");
    check_ptr(dv, call, "dv");
  }
  check_ptr(delta, call, "delta");
  return true;
}

bool fused_attention_available(bool cuda, DType dt, int64_t head_dim) {
  if (!cuda) return dt == DType::F32 || dt == DType::F64;
  return (dt == DType::F16 || dt == DType::BF16) && head_dim > 0 && head_dim % 8 == 0 &&
         head_dim <= kFusedAttentionMaxHeadDim;
}

}  // namespace ls
