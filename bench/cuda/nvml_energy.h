// The GPU's energy counter and SM clock through NVML, for the benchmarks: how many joules a
// stretch of work took, and at what clock. NVML comes with the driver (libnvidia-ml.so.1), not
// with the toolkit, so it is opened at run time; where it cannot be opened (no driver, a
// container without it, a GPU without an energy counter) `available()` is false and the
// benchmarks print no energy. The device is matched to the CUDA device by PCI bus id.
#pragma once

#include <cuda_runtime.h>
#include <dlfcn.h>

#include <string>

namespace ls::bench {

class NvmlEnergy {
 public:
  explicit NvmlEnergy(int cuda_device = 0) {
    lib_ = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib_ == nullptr) {
      why_ = "libnvidia-ml.so.1 not found";
      return;
    }
    init_ = reinterpret_cast<InitFn>(dlsym(lib_, "nvmlInit_v2"));
    shutdown_ = reinterpret_cast<ShutdownFn>(dlsym(lib_, "nvmlShutdown"));
    by_bus_ = reinterpret_cast<ByBusFn>(dlsym(lib_, "nvmlDeviceGetHandleByPciBusId_v2"));
    energy_ = reinterpret_cast<EnergyFn>(dlsym(lib_, "nvmlDeviceGetTotalEnergyConsumption"));
    clock_ = reinterpret_cast<ClockFn>(dlsym(lib_, "nvmlDeviceGetClockInfo"));
    if (!init_ || !shutdown_ || !by_bus_ || !energy_ || !clock_) {
      why_ = "an NVML function is missing";
      return;
    }
    if (init_() != 0) {
      why_ = "nvmlInit_v2 failed";
      return;
    }
    initialised_ = true;
    char bus[32] = {};
    if (cudaDeviceGetPCIBusId(bus, sizeof bus, cuda_device) != cudaSuccess) {
      why_ = "cudaDeviceGetPCIBusId failed";
      return;
    }
    if (by_bus_(bus, &device_) != 0) {
      why_ = std::string("nvmlDeviceGetHandleByPciBusId_v2(") + bus + ") failed";
      return;
    }
    unsigned long long mj = 0;
    if (energy_(device_, &mj) != 0) {
      why_ = "nvmlDeviceGetTotalEnergyConsumption is not supported";
      return;
    }
    ok_ = true;
  }
  ~NvmlEnergy() {
    if (initialised_) shutdown_();
    if (lib_ != nullptr) dlclose(lib_);
  }
  NvmlEnergy(const NvmlEnergy&) = delete;
  NvmlEnergy& operator=(const NvmlEnergy&) = delete;

  bool available() const { return ok_; }
  // Why the counter is unavailable ("" when it is).
  const std::string& why() const { return why_; }
  // Joules the GPU used since the driver loaded (the counter counts millijoules); -1 if unknown.
  double joules() const {
    unsigned long long mj = 0;
    if (!ok_ || energy_(device_, &mj) != 0) return -1;
    return static_cast<double>(mj) * 1e-3;
  }
  // The SM clock now, in MHz; -1 if unknown.
  int sm_clock_mhz() const {
    unsigned mhz = 0;
    if (!ok_ || clock_(device_, /*NVML_CLOCK_SM*/ 1, &mhz) != 0) return -1;
    return static_cast<int>(mhz);
  }

 private:
  using Device = void*;  // nvmlDevice_t, an opaque pointer
  using InitFn = int (*)();
  using ShutdownFn = int (*)();
  using ByBusFn = int (*)(const char*, Device*);
  using EnergyFn = int (*)(Device, unsigned long long*);
  using ClockFn = int (*)(Device, int, unsigned*);
  void* lib_ = nullptr;
  InitFn init_ = nullptr;
  ShutdownFn shutdown_ = nullptr;
  ByBusFn by_bus_ = nullptr;
  EnergyFn energy_ = nullptr;
  ClockFn clock_ = nullptr;
  Device device_ = nullptr;
  bool initialised_ = false, ok_ = false;
  std::string why_;
};

}  // namespace ls::bench
