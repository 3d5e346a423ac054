// Turns CUDA runtime failures into ls::Error(LS_ERR_CUDA) naming the call. Usable from plain
// C++ files: it includes the CUDA runtime only when the CUDA backend is built.
#pragma once

#include "runtime/error.h"

#if LS_HAVE_CUDA
#include <cuda_runtime.h>

#define LS_CUDA_CHECK(call)                                                              \
  do {                                                                                   \
    cudaError_t ls_cuda_err_ = (call);                                                   \
    if (ls_cuda_err_ != cudaSuccess) {                                                   \
      (void)cudaGetLastError();                                                          \
      LS_FAIL(ls_cuda_err_ == cudaErrorMemoryAllocation ? LS_ERR_OUT_OF_MEMORY : LS_ERR_CUDA, \
              #call << " failed: " << cudaGetErrorName(ls_cuda_err_) << " ("             \
                    << cudaGetErrorString(ls_cuda_err_) << ")");                         \
    }                                                                                    \
  } while (0)
#endif
