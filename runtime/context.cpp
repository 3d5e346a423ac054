#include "runtime/context.h"

#include <utility>

#include "layers/kernels/backends.h"
#include "runtime/cuda_check.h"
#include "runtime/error.h"

namespace ls {

Context::Context(const ContextOptions& options) : seed_(options.seed) {
  using D = ContextOptions::Device;
  int count = cuda_device_count();
  bool use_cuda = false;
  if (options.device == D::Cuda) {
#if !LS_HAVE_CUDA
    LS_FAIL(LS_ERR_UNSUPPORTED, "device cuda:" << options.device_index
                                               << " requested but this build has no CUDA backend");
#endif
    LS_REQUIRE(count > 0, LS_ERR_UNSUPPORTED,
               "device cuda:" << options.device_index << " requested but no CUDA device is usable");
    LS_CHECK_ARG(
        options.device_index >= 0 && options.device_index < count,
        "device cuda:" << options.device_index << " out of range (" << count << " CUDA devices)");
    use_cuda = true;
  } else if (options.device == D::Auto) {
    use_cuda = count > 0;
  }
  LS_CHECK_ARG(options.stream == nullptr || use_cuda,
               "a CUDA stream was given but the context runs on the CPU");

  if (use_cuda) {
#if LS_HAVE_CUDA
    int index = options.device == D::Cuda ? options.device_index : 0;
    info_ = cuda_device_info(index);
    LS_CUDA_CHECK(cudaSetDevice(index));
    if (options.stream) {
      stream_ = options.stream;
    } else {
      cudaStream_t s = nullptr;
      LS_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
      stream_ = s;
      owns_stream_ = true;
    }
    try {
      ops_ = make_cuda_ops(index, stream_);
    } catch (...) {
      if (owns_stream_) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
      throw;
    }
#endif
  } else {
    info_ = cpu_device_info();
    ops_ = make_cpu_ops();
  }
  ops_->set_allow_tf32(options.allow_tf32);
  ops_->set_gemm_autotune(options.gemm_autotune);
}

Context::~Context() {
  ops_.reset();  // outermost decorator first, then what it wrapped, the backend last
  while (!wrapped_.empty()) wrapped_.pop_back();
#if LS_HAVE_CUDA
  if (owns_stream_ && stream_) {
    cudaSetDevice(info_.index);
    cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
  }
#endif
}

void Context::wrap_ops(const OpsWrapper& wrap) {
  LS_CHECK_ARG(static_cast<bool>(wrap), "Context::wrap_ops: no wrapper given");
  std::unique_ptr<Ops> outer = wrap(*ops_);
  LS_CHECK_ARG(outer != nullptr, "Context::wrap_ops: the wrapper returned no Ops");
  wrapped_.push_back(std::move(ops_));
  ops_ = std::move(outer);
}

DeviceInfo Context::query_device() const {
  return info_.cuda ? cuda_device_info(info_.index) : cpu_device_info();
}

void Context::activate() const {
#if LS_HAVE_CUDA
  if (info_.cuda) LS_CUDA_CHECK(cudaSetDevice(info_.index));
#endif
}

void Context::synchronize() {
  activate();
  ops_->synchronize();
}

}  // namespace ls
