// Defaults of the optional parts of the Ops interface (step capture): backends without CUDA
// graphs refuse them with LS_ERR_UNSUPPORTED.
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

}  // namespace ls
