// Allocation instrumentation: the only door through which ls_train takes memory that tensors live
// in. Every host or device allocation for tensor storage goes through device_malloc /
// host_aligned_alloc, which count calls and bytes in process-wide atomic counters, so a test can
// prove that a training step allocates nothing (the counters do not move across the step).
//
// What this does NOT see: ordinary C++ heap use (std::vector, std::string, operator new). A test
// that wants to prove the hot path makes no host heap allocation must also replace the global
// operator new/delete in its own executable and count there; these functions do not intercept
// malloc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ls {

// A snapshot of the counters. Cumulative since process start (nothing is ever reset, so tests
// compare two snapshots).
struct AllocCounters {
  uint64_t device_allocs = 0;  // successful device_malloc calls
  uint64_t device_frees = 0;   // device_free calls with a non-null pointer
  uint64_t host_allocs = 0;    // successful host_aligned_alloc calls
  uint64_t host_frees = 0;     // host_aligned_free calls with a non-null pointer
  uint64_t device_bytes = 0;   // bytes requested by successful device_malloc calls
  uint64_t host_bytes = 0;     // bytes requested by successful host_aligned_alloc calls
  uint64_t bytes = 0;          // device_bytes + host_bytes
};

AllocCounters alloc_counters();

// Device memory (cudaMalloc on the current device). Before allocating, compares the request with
// cudaMemGetInfo's free memory and throws LS_ERR_OUT_OF_MEMORY naming both (bytes and MiB/GiB)
// when it does not fit; a failing cudaMalloc throws the same. bytes == 0 returns nullptr without
// counting. Without the CUDA backend it throws LS_ERR_UNSUPPORTED.
void* device_malloc(size_t bytes);
// cudaFree; nullptr is a no-op. Throws LS_ERR_CUDA when cudaFree fails.
void device_free(void* ptr);

// Host memory aligned to `align` (a power of two; values below 256 are raised to 256). The size
// is rounded up to a multiple of the alignment. Failure throws LS_ERR_OUT_OF_MEMORY with the byte
// count. bytes == 0 returns nullptr without counting.
void* host_aligned_alloc(size_t bytes, size_t align = 256);
// Frees what host_aligned_alloc returned; nullptr is a no-op.
void host_aligned_free(void* ptr) noexcept;

// "1073741824 bytes (1.00 GiB)", "4096 bytes (4.00 KiB)": for error messages and reports.
std::string format_bytes(uint64_t bytes);

}  // namespace ls
