#include "runtime/device.h"

#include <thread>

#include "runtime/error.h"
#include "runtime/cuda_check.h"

#if defined(__linux__)
#include <unistd.h>
#endif

namespace ls {

int cuda_device_count() {
#if LS_HAVE_CUDA
  int count = 0;
  // No driver, no device or an insufficient driver all mean: no usable GPU.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error state
    return 0;
  }
  return count;
#else
  return 0;
#endif
}

DeviceInfo cuda_device_info(int index) {
  int count = cuda_device_count();
  LS_CHECK_ARG(index >= 0 && index < count,
               "CUDA device index " << index << " out of range (" << count << " devices)");
  DeviceInfo info;
#if LS_HAVE_CUDA
  cudaDeviceProp prop{};
  LS_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  info.cuda = true;
  info.index = index;
  info.name = prop.name;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.multiprocessors = prop.multiProcessorCount;
  info.total_memory = prop.totalGlobalMem;
  int previous = 0;
  LS_CUDA_CHECK(cudaGetDevice(&previous));
  LS_CUDA_CHECK(cudaSetDevice(index));
  size_t free_b = 0, total_b = 0;
  cudaError_t e = cudaMemGetInfo(&free_b, &total_b);
  cudaSetDevice(previous);
  LS_CUDA_CHECK(e);
  info.free_memory = free_b;
  info.total_memory = total_b;
#endif
  return info;
}

DeviceInfo cpu_device_info() {
  DeviceInfo info;
  info.cuda = false;
  unsigned threads = std::thread::hardware_concurrency();
  info.multiprocessors = static_cast<int>(threads);
  info.name = "CPU (" + std::to_string(threads) + " threads)";
#if defined(__linux__)
  long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0) info.total_memory = static_cast<uint64_t>(pages) * page;
  if (avail > 0 && page > 0) info.free_memory = static_cast<uint64_t>(avail) * page;
#endif
  return info;
}

}  // namespace ls
