// Arena: the one allocation of a memory kind that a run's buffers live in, made at creation and
// freed at destruction. A planned buffer's address is base() + Plan::arena_offset(id).
//
// Host arenas come from host_aligned_alloc, device arenas from device_malloc (cudaMalloc, after
// checking cudaMemGetInfo), so both are counted by alloc_counters(). Failure to get the memory is
// LS_ERR_OUT_OF_MEMORY with the byte counts; a device arena in a build without CUDA is
// LS_ERR_UNSUPPORTED.
#pragma once

#include <cstddef>
#include <cstdint>

#include "allocator/planner.h"

namespace ls {

enum class MemoryKind : uint8_t { Host = 0, Device = 1 };

const char* memory_kind_name(MemoryKind kind);  // "host", "device"

class Arena {
 public:
  Arena() = default;  // empty: size() == 0, base() == nullptr
  // `align` (a power of two, raised to at least 256) is the alignment of base(); pass
  // Plan::base_align. bytes == 0 makes an empty arena without allocating.
  Arena(MemoryKind kind, size_t bytes, size_t align = kMinBufferAlign);
  // An arena of plan.total_bytes aligned to plan.base_align.
  static Arena for_plan(MemoryKind kind, const Plan& plan);

  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  Arena(Arena&& other) noexcept;
  Arena& operator=(Arena&& other) noexcept;

  MemoryKind kind() const { return kind_; }
  size_t size() const { return size_; }
  size_t alignment() const { return align_; }
  std::byte* base() const { return base_; }

  // base() + offset, after checking that [offset, offset + bytes) lies inside the arena
  // (LS_ERR_INTERNAL otherwise).
  void* at(size_t offset, size_t bytes) const;
  // The address of a buffer of `plan`; checks that the plan fits this arena and its alignment.
  void* address(const Plan& plan, BufferId id) const;

  // Frees the memory now and leaves the arena empty. Unlike the destructor, reports a failing
  // cudaFree (LS_ERR_CUDA).
  void release();

 private:
  MemoryKind kind_ = MemoryKind::Host;
  size_t size_ = 0;
  size_t align_ = kMinBufferAlign;
  std::byte* base_ = nullptr;   // aligned to align_
  void* allocation_ = nullptr;  // what the allocator returned (base_ may be above it)
};

}  // namespace ls
