// Status strings, the thread-local error message, versions and build information.
#include <string>

#include "capi/capi_internal.h"

namespace ls::capi {

namespace {
thread_local std::string t_last_error;
}

void set_error(ls_status, const std::string& message) { t_last_error = message; }
void clear_error() { t_last_error.clear(); }

}  // namespace ls::capi

extern "C" {

LS_API const char* ls_status_string(ls_status status) {
  switch (status) {
    case LS_OK: return "LS_OK";
    case LS_ERR_INVALID_ARGUMENT: return "LS_ERR_INVALID_ARGUMENT";
    case LS_ERR_OUT_OF_MEMORY: return "LS_ERR_OUT_OF_MEMORY";
    case LS_ERR_UNSUPPORTED: return "LS_ERR_UNSUPPORTED";
    case LS_ERR_CUDA: return "LS_ERR_CUDA";
    case LS_ERR_CUBLAS: return "LS_ERR_CUBLAS";
    case LS_ERR_NCCL: return "LS_ERR_NCCL";
    case LS_ERR_IO: return "LS_ERR_IO";
    case LS_ERR_CORRUPT_DATA: return "LS_ERR_CORRUPT_DATA";
    case LS_ERR_INTERNAL: return "LS_ERR_INTERNAL";
    case LS_ERR_NUMERIC: return "LS_ERR_NUMERIC";
  }
  return "LS_ERR_UNKNOWN";
}

LS_API const char* ls_last_error(void) { return ls::capi::t_last_error.c_str(); }

LS_API uint32_t ls_abi_version(void) { return LS_ABI_VERSION; }

LS_API const char* ls_version_string(void) { return LS_VERSION_STRING; }

LS_API uint32_t ls_backends(void) {
  uint32_t mask = LS_BACKEND_CPU;
#if LS_HAVE_CUDA
  mask |= LS_BACKEND_CUDA;
#endif
#if LS_HAVE_NCCL
  mask |= LS_BACKEND_NCCL;
#endif
#if LS_HAVE_CBLAS
  mask |= LS_BACKEND_CBLAS;
#endif
  return mask;
}

}  // extern "C"
