// Defaults of the optional parts of the Ops interface (step capture, fused attention):
// backends without them refuse with LS_ERR_UNSUPPORTED; and which backends fuse attention.
#include "layers/kernels/ops.h"

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

bool fused_attention_available(bool cuda, DType dt, int64_t head_dim) {
  if (!cuda) return dt == DType::F32 || dt == DType::F64;
  return (dt == DType::F16 || dt == DType::BF16) && head_dim > 0 && head_dim % 8 == 0 &&
         head_dim <= kFusedAttentionMaxHeadDim;
}

}  // namespace ls
