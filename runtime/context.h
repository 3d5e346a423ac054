// The context: which device the runtime works on, its stream, the kernel backend (Ops) for
// that device, and the base random seed. Everything else (models, trainers, layers) is created
// against a context.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "layers/kernels/ops.h"
#include "runtime/device.h"

namespace ls {

struct ContextOptions {
  enum class Device { Auto, Cpu, Cuda } device = Device::Auto;
  int device_index = 0;
  uint64_t seed = 1;
  void* stream = nullptr;  // cudaStream_t owned by the caller, or null
  bool allow_tf32 = true;  // fp32 GEMMs on TF32 tensor cores
  bool gemm_autotune = false;  // time cuBLASLt's candidates per GEMM shape, keep the fastest
};

class Context {
 public:
  explicit Context(const ContextOptions& options);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  bool is_cuda() const { return info_.cuda; }
  const DeviceInfo& device() const { return info_; }
  // Refreshes free memory in the device info.
  DeviceInfo query_device() const;
  uint64_t seed() const { return seed_; }
  Ops& ops() { return *ops_; }
  // Internal (not in the C ABI), for benchmarks and tools: puts a decorator in front of the
  // backend. `wrap` gets the current Ops and returns the Ops that ops() gives from then on (a
  // decorator forwarding to the one it got); the context keeps the wrapped Ops alive behind it
  // and destroys the decorator first. Call it before creating a model or trainer on this context:
  // they keep references to ops().
  using OpsWrapper = std::function<std::unique_ptr<Ops>(Ops& inner)>;
  void wrap_ops(const OpsWrapper& wrap);
  void* stream() const { return stream_; }
  void synchronize();
  // Makes this context's device current on the calling thread (no-op on the CPU).
  void activate() const;

 private:
  DeviceInfo info_;
  uint64_t seed_;
  void* stream_ = nullptr;
  bool owns_stream_ = false;
  std::unique_ptr<Ops> ops_;
  std::vector<std::unique_ptr<Ops>> wrapped_;  // the Ops behind ops_, innermost (backend) first
};

}  // namespace ls
