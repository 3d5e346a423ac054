// Factories for the two implementations of Ops. The context picks one for its device.
#pragma once

#include <memory>

#include "layers/kernels/ops.h"

namespace ls {

std::unique_ptr<Ops> make_cpu_ops();

// Available only when built with LS_HAVE_CUDA. `stream` is a cudaStream_t (null = the
// context's own stream created by the runtime). The device must already be current.
std::unique_ptr<Ops> make_cuda_ops(int device, void* stream);

}  // namespace ls
