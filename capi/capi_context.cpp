// Devices and contexts.
#include <cstddef>
#include <cstring>
#include <memory>

#include "capi/capi_internal.h"
#include "capi/handles.h"
#include "runtime/device.h"

namespace {

// Sizes of the first published version of each struct (their fields up to here never move).
constexpr size_t kDeviceInfoV0 = sizeof(ls_device_info);
// Callers must set at least device, device_index and seed; stream may be left out (NULL).
constexpr size_t kContextOptionsV0 = offsetof(ls_context_options, stream);

ls_device_info to_c(const ls::DeviceInfo& d) {
  ls_device_info out;
  std::memset(&out, 0, sizeof(out));
  out.struct_size = sizeof(out);
  out.kind = d.cuda ? LS_DEVICE_CUDA : LS_DEVICE_CPU;
  out.index = d.index;
  std::strncpy(out.name, d.name.c_str(), sizeof(out.name) - 1);
  out.total_memory = d.total_memory;
  out.free_memory = d.free_memory;
  out.compute_capability_major = d.cc_major;
  out.compute_capability_minor = d.cc_minor;
  out.multiprocessors = d.multiprocessors;
  return out;
}

}  // namespace

extern "C" {

LS_API void ls_device_info_init(ls_device_info* info) {
  if (!info) return;
  std::memset(info, 0, sizeof(*info));
  info->struct_size = sizeof(*info);
}

LS_API ls_status ls_cuda_device_count(int32_t* count) {
  return ls::capi::guarded("ls_cuda_device_count", [&] {
    LS_CHECK_NOT_NULL(count);
    *count = ls::cuda_device_count();
  });
}

LS_API ls_status ls_cuda_device_info(int32_t index, ls_device_info* info) {
  return ls::capi::guarded("ls_cuda_device_info", [&] {
    LS_CHECK_NOT_NULL(info);
    ls::capi::check_out_struct(info, kDeviceInfoV0, "ls_device_info");
    ls::capi::write_struct(info, to_c(ls::cuda_device_info(index)));
  });
}

LS_API void ls_context_options_init(ls_context_options* options) {
  if (!options) return;
  std::memset(options, 0, sizeof(*options));
  options->struct_size = sizeof(*options);
  options->device = LS_DEVICE_AUTO;
  options->device_index = 0;
  options->seed = 1;
  options->stream = nullptr;
  options->allow_tf32 = 1;
  options->gemm_autotune = 0;
}

LS_API ls_status ls_context_create(const ls_context_options* options, ls_context** out) {
  return ls::capi::guarded("ls_context_create", [&] {
    LS_CHECK_NOT_NULL(out);
    ls_context_options o;
    ls_context_options_init(&o);
    if (options) ls::capi::read_struct(options, o, kContextOptionsV0, "ls_context_options");
    ls::ContextOptions co;
    switch (o.device) {
      case LS_DEVICE_AUTO: co.device = ls::ContextOptions::Device::Auto; break;
      case LS_DEVICE_CPU: co.device = ls::ContextOptions::Device::Cpu; break;
      case LS_DEVICE_CUDA: co.device = ls::ContextOptions::Device::Cuda; break;
      default: LS_FAIL(LS_ERR_INVALID_ARGUMENT, "unknown device kind " << static_cast<int>(o.device));
    }
    co.device_index = o.device_index;
    LS_CHECK_ARG(o.allow_tf32 == 0 || o.allow_tf32 == 1,
                 "ls_context_options.allow_tf32 must be 0 or 1, got " << o.allow_tf32);
    co.allow_tf32 = o.allow_tf32 != 0;
    LS_CHECK_ARG(o.gemm_autotune == 0 || o.gemm_autotune == 1,
                 "ls_context_options.gemm_autotune must be 0 or 1, got " << o.gemm_autotune);
    co.gemm_autotune = o.gemm_autotune != 0;
    co.seed = o.seed;
    co.stream = o.stream;
    auto ctx = std::make_unique<ls_context>();
    ctx->impl = std::make_unique<ls::Context>(co);
    *out = ctx.release();
  });
}

LS_API void ls_context_destroy(ls_context* context) { delete context; }

LS_API ls_status ls_context_device(const ls_context* context, ls_device_info* info) {
  return ls::capi::guarded("ls_context_device", [&] {
    LS_CHECK_NOT_NULL(context);
    LS_CHECK_NOT_NULL(info);
    ls::capi::check_out_struct(info, kDeviceInfoV0, "ls_device_info");
    ls::capi::write_struct(info, to_c(context->impl->query_device()));
  });
}

LS_API ls_status ls_context_synchronize(ls_context* context) {
  return ls::capi::guarded("ls_context_synchronize", [&] {
    LS_CHECK_NOT_NULL(context);
    context->impl->synchronize();
  });
}

}  // extern "C"
