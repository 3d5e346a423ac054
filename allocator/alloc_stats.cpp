// Counted host and device allocation (see alloc_stats.h).
#include "allocator/alloc_stats.h"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "runtime/error.h"

#if LS_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace ls {
namespace {

struct Counters {
  std::atomic<uint64_t> device_allocs{0};
  std::atomic<uint64_t> device_frees{0};
  std::atomic<uint64_t> host_allocs{0};
  std::atomic<uint64_t> host_frees{0};
  std::atomic<uint64_t> device_bytes{0};
  std::atomic<uint64_t> host_bytes{0};
};

Counters& counters() {
  static Counters c;
  return c;
}

constexpr size_t kMinHostAlign = 256;

}  // namespace

AllocCounters alloc_counters() {
  Counters& c = counters();
  AllocCounters s;
  s.device_allocs = c.device_allocs.load(std::memory_order_relaxed);
  s.device_frees = c.device_frees.load(std::memory_order_relaxed);
  s.host_allocs = c.host_allocs.load(std::memory_order_relaxed);
  s.host_frees = c.host_frees.load(std::memory_order_relaxed);
  s.device_bytes = c.device_bytes.load(std::memory_order_relaxed);
  s.host_bytes = c.host_bytes.load(std::memory_order_relaxed);
  s.bytes = s.device_bytes + s.host_bytes;
  return s;
}

std::string format_bytes(uint64_t bytes) {
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  char buf[96];
  if (bytes < 1024) {
    std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(bytes));
    return buf;
  }
  double value = static_cast<double>(bytes) / 1024.0;
  int unit = 0;
  while (value >= 1024.0 && unit < 5) {
    value /= 1024.0;
    ++unit;
  }
  std::snprintf(buf, sizeof buf, "%llu bytes (%.2f %s)", static_cast<unsigned long long>(bytes),
                value, kUnits[unit]);
  return buf;
}

void* device_malloc(size_t bytes) {
  if (bytes == 0) return nullptr;
#if LS_HAVE_CUDA
  size_t free_bytes = 0, total_bytes = 0;
  cudaError_t err = cudaMemGetInfo(&free_bytes, &total_bytes);
  LS_REQUIRE(err == cudaSuccess, LS_ERR_CUDA,
             "device_malloc: cudaMemGetInfo failed: " << cudaGetErrorString(err));
  LS_REQUIRE(bytes <= free_bytes, LS_ERR_OUT_OF_MEMORY,
             "device_malloc: needs " << format_bytes(bytes) << " of device memory but only "
                                     << format_bytes(free_bytes) << " of "
                                     << format_bytes(total_bytes) << " is free");
  void* ptr = nullptr;
  err = cudaMalloc(&ptr, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear the error so it does not surface on an unrelated call
    LS_FAIL(LS_ERR_OUT_OF_MEMORY, "device_malloc: cudaMalloc of "
                                      << format_bytes(bytes) << " failed ("
                                      << cudaGetErrorString(err) << "); "
                                      << format_bytes(free_bytes) << " was free before the call");
  }
  Counters& c = counters();
  c.device_allocs.fetch_add(1, std::memory_order_relaxed);
  c.device_bytes.fetch_add(bytes, std::memory_order_relaxed);
  return ptr;
#else
  LS_FAIL(LS_ERR_UNSUPPORTED, "device_malloc: " << format_bytes(bytes)
                                                << " requested but this build has no CUDA backend");
#endif
}

void device_free(void* ptr) {
  if (ptr == nullptr) return;
#if LS_HAVE_CUDA
  counters().device_frees.fetch_add(1, std::memory_order_relaxed);
  cudaError_t err = cudaFree(ptr);
  LS_REQUIRE(err == cudaSuccess, LS_ERR_CUDA,
             "device_free: cudaFree failed: " << cudaGetErrorString(err));
#else
  LS_FAIL(LS_ERR_INTERNAL, "device_free: called in a build without the CUDA backend");
#endif
}

void* host_aligned_alloc(size_t bytes, size_t align) {
  if (bytes == 0) return nullptr;
  LS_CHECK_ARG(align != 0 && (align & (align - 1)) == 0,
               "host_aligned_alloc: alignment " << align << " is not a power of two");
  if (align < kMinHostAlign) align = kMinHostAlign;
  LS_REQUIRE(bytes <= SIZE_MAX - (align - 1), LS_ERR_OUT_OF_MEMORY,
             "host_aligned_alloc: cannot allocate " << format_bytes(bytes) << " of host memory");
  const size_t rounded = (bytes + align - 1) & ~(align - 1);
  void* ptr = nullptr;
  const int rc = posix_memalign(&ptr, align, rounded);
  LS_REQUIRE(rc == 0 && ptr != nullptr, LS_ERR_OUT_OF_MEMORY,
             "host_aligned_alloc: cannot allocate " << format_bytes(bytes)
                                                    << " of host memory (aligned to " << align
                                                    << "): " << std::strerror(rc));
  Counters& c = counters();
  c.host_allocs.fetch_add(1, std::memory_order_relaxed);
  c.host_bytes.fetch_add(bytes, std::memory_order_relaxed);
  return ptr;
}

void host_aligned_free(void* ptr) noexcept {
  if (ptr == nullptr) return;
  counters().host_frees.fetch_add(1, std::memory_order_relaxed);
  std::free(ptr);
}

}  // namespace ls
