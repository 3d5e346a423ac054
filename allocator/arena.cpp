// Arena: one counted host or device allocation (see arena.h).
#include "allocator/arena.h"

#include <utility>

#include "allocator/alloc_stats.h"
#include "runtime/error.h"

namespace ls {

const char* memory_kind_name(MemoryKind kind) {
  switch (kind) {
    case MemoryKind::Host:
      return "host";
    case MemoryKind::Device:
      return "device";
  }
  return "unknown";
}

Arena::Arena(MemoryKind kind, size_t bytes, size_t align) : kind_(kind) {
  LS_CHECK_ARG(kind == MemoryKind::Host || kind == MemoryKind::Device,
               "Arena: invalid memory kind " << static_cast<int>(kind));
  LS_CHECK_ARG(align != 0 && (align & (align - 1)) == 0,
               "Arena: alignment " << align << " is not a power of two");
  align_ = normalize_alignment(align);
  if (bytes == 0) return;
  if (kind == MemoryKind::Host) {
    allocation_ = host_aligned_alloc(bytes, align_);
    base_ = static_cast<std::byte*>(allocation_);
  } else {
    // cudaMalloc guarantees 256-byte alignment; for more, allocate the slack and round up.
    const size_t slack = align_ - kMinBufferAlign;
    LS_REQUIRE(bytes <= SIZE_MAX - slack, LS_ERR_OUT_OF_MEMORY,
               "Arena: cannot allocate " << format_bytes(bytes) << " of device memory");
    allocation_ = device_malloc(bytes + slack);
    const uintptr_t raw = reinterpret_cast<uintptr_t>(allocation_);
    base_ = reinterpret_cast<std::byte*>((raw + align_ - 1) & ~(uintptr_t{align_} - 1));
  }
  size_ = bytes;
}

Arena Arena::for_plan(MemoryKind kind, const Plan& plan) {
  return Arena(kind, plan.total_bytes, plan.base_align);
}

Arena::~Arena() {
  try {
    release();
  } catch (const Error&) {
    // A destructor cannot report: a failed cudaFree at teardown means the CUDA context is already
    // broken, and its sticky error surfaces on the next CUDA call. Call release() to see it.
  }
}

Arena::Arena(Arena&& other) noexcept
    : kind_(other.kind_),
      size_(std::exchange(other.size_, 0)),
      align_(other.align_),
      base_(std::exchange(other.base_, nullptr)),
      allocation_(std::exchange(other.allocation_, nullptr)) {}

Arena& Arena::operator=(Arena&& other) noexcept {
  if (this != &other) {
    try {
      release();
    } catch (const Error&) {
      // As in the destructor.
    }
    kind_ = other.kind_;
    align_ = other.align_;
    size_ = std::exchange(other.size_, 0);
    base_ = std::exchange(other.base_, nullptr);
    allocation_ = std::exchange(other.allocation_, nullptr);
  }
  return *this;
}

void Arena::release() {
  void* allocation = std::exchange(allocation_, nullptr);
  base_ = nullptr;
  size_ = 0;
  if (allocation == nullptr) return;
  if (kind_ == MemoryKind::Host) {
    host_aligned_free(allocation);
  } else {
    device_free(allocation);
  }
}

void* Arena::at(size_t offset, size_t bytes) const {
  LS_REQUIRE(offset <= size_ && bytes <= size_ - offset, LS_ERR_INTERNAL,
             "Arena::at: [" << offset << ", +" << bytes << ") lies outside the "
                            << memory_kind_name(kind_) << " arena of " << size_ << " bytes");
  return base_ + offset;
}

void* Arena::address(const Plan& plan, BufferId id) const {
  LS_REQUIRE(plan.total_bytes <= size_, LS_ERR_INTERNAL,
             "Arena::address: the plan needs " << plan.total_bytes << " bytes but the "
                                               << memory_kind_name(kind_) << " arena has "
                                               << size_);
  LS_REQUIRE(plan.base_align <= align_, LS_ERR_INTERNAL,
             "Arena::address: the plan needs a base aligned to "
                 << plan.base_align << " but the arena's is " << align_);
  return base_ + plan.arena_offset(id);
}

}  // namespace ls
