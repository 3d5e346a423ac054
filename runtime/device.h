// Device discovery. With no CUDA backend compiled in, or no driver, or no GPU, there are
// simply zero CUDA devices: never an error.
#pragma once

#include <cstdint>
#include <string>

namespace ls {

struct DeviceInfo {
  bool cuda = false;
  int index = 0;
  std::string name;
  uint64_t total_memory = 0;
  uint64_t free_memory = 0;
  int cc_major = 0, cc_minor = 0;
  int multiprocessors = 0;
};

int cuda_device_count();
DeviceInfo cuda_device_info(int index);  // throws LS_ERR_INVALID_ARGUMENT on a bad index
DeviceInfo cpu_device_info();

}  // namespace ls
