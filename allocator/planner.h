// Memory planner: buffer lifetimes -> offsets in one arena.
//
// The arena has two regions, laid out one after the other:
//
//   [ persistent region | planned region ]
//   0                   planned_base       total_bytes
//
// - Persistent buffers (parameters, working copy, gradients, optimizer moments, loss-scaler
//   state, GEMM workspace) are alive for the whole run. They are laid out one after another in
//   declaration order, each at its alignment. For the flat buffers that one fused Adam launch or
//   one all-reduce must cover, declare ONE persistent buffer per category and place tensors
//   inside it with FlatLayout (below), so every flat buffer shares the same element offsets.
// - Planned buffers (activations saved for backward, temporaries) have a lifetime
//   [first_use, last_use] (inclusive) in positions of the step's schedule, recorded by a dry run
//   of forward + backward that calls use() each time a buffer is touched. Offsets are assigned by
//   greedy-by-size best fit (Pisarchyk & Lee 2020, "Efficient Memory Management for Deep Neural
//   Net Inference"): buffers are taken largest first; each goes into the smallest gap, between
//   already-placed buffers whose lifetimes overlap its own, that fits it; if none fits, it goes
//   right after the highest of those buffers.
//
// A planned buffer that is declared but never used gets no space: its Placement has
// region MemRegion::None and asking for its offset (Plan::arena_offset) throws LS_ERR_INTERNAL, so
// a buffer the dry run forgot to touch is a loud error, never a silent overlap.
//
// Sizes are rounded up to a multiple of the buffer's alignment; alignments are powers of two
// >= 256 (smaller requests are raised to 256, others rounded up to the next power of two).
//
// check() proves a plan sound: no two buffers alive at the same time share a byte, every offset
// honours its alignment and everything lies inside its region. plan() runs it itself in debug
// builds (LS_DEBUG_CHECKS).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace ls {

// What a buffer holds; the memory report gives bytes per category. Count is not a category: it is
// the number of categories, for iteration (for (int i = 0; i < kMemCategoryCount; ++i)).
enum class MemCategory : int {
  Parameters = 0,        // fp32 master weights
  WorkingCopy = 1,       // fp16/bf16 copy of the weights the kernels read
  Gradients = 2,         // flat gradient buffer
  OptimizerState = 3,    // Adam moments
  LossScaler = 4,        // loss scale, overflow flag, norms
  SavedActivations = 5,  // written by a forward, read by its backward
  Temporaries = 6,       // alive within one stage of forward or backward
  Workspace = 7,         // cuBLASLt and reduction scratch
  Inputs = 8,            // token ids and padding masks of one batch
  Count = 9
};
constexpr int kMemCategoryCount = static_cast<int>(MemCategory::Count);

// "parameters", "working_copy", "gradients", "optimizer_state", "loss_scaler",
// "saved_activations", "temporaries", "workspace", "inputs".
const char* mem_category_name(MemCategory category);

// Smallest alignment the planner hands out, and the granularity of region sizes.
constexpr size_t kMinBufferAlign = 256;

// Rounds a requested alignment up to a power of two >= kMinBufferAlign (0 means the minimum).
// Throws LS_ERR_INVALID_ARGUMENT above 1 GiB.
size_t normalize_alignment(size_t align);

struct BufferId {
  int32_t index = -1;
  bool valid() const { return index >= 0; }
  bool operator==(BufferId other) const { return index == other.index; }
  bool operator!=(BufferId other) const { return index != other.index; }
};

enum class MemRegion : uint8_t { None = 0, Persistent = 1, Planned = 2 };

struct BufferDesc {
  std::string name;
  MemCategory category = MemCategory::Temporaries;
  size_t bytes = 0;          // as requested
  size_t aligned_bytes = 0;  // bytes rounded up to a multiple of align: the space it occupies
  size_t align = kMinBufferAlign;
  bool persistent = false;
  int64_t first_use = -1;  // -1 until the first use(); persistent buffers ignore lifetimes
  int64_t last_use = -1;
  bool used() const { return first_use >= 0; }
};

struct Placement {
  MemRegion region = MemRegion::None;
  size_t offset = 0;  // inside its region
};

struct Plan {
  std::vector<Placement> placements;    // indexed by BufferId::index
  size_t persistent_bytes = 0;          // size of the persistent region (multiple of 256)
  size_t planned_base = 0;              // where the planned region starts in the arena
  size_t planned_bytes = 0;             // size of the planned region (multiple of 256)
  size_t total_bytes = 0;               // planned_base + planned_bytes: the arena to allocate
  size_t lower_bound_bytes = 0;         // max over positions of the live planned bytes
  size_t no_reuse_bytes = 0;            // sum of every used planned buffer's aligned size
  size_t base_align = kMinBufferAlign;  // the largest alignment: the arena's base must honour it

  // Byte offset of a buffer from the arena's base. Throws LS_ERR_INTERNAL for a buffer with no
  // space (declared, never used) or an id this plan does not know.
  size_t arena_offset(BufferId id) const;
};

// Bytes per category and the planner's totals; the C API's memory report is built from this.
struct MemoryReport {
  // Aligned bytes declared per category, before reuse: for planned categories the sum over
  // buffers, which the planned region undercuts by sharing memory between buffers whose
  // lifetimes do not overlap.
  std::array<size_t, kMemCategoryCount> category_bytes{};
  size_t planned_bytes = 0;             // the planned region as placed
  size_t lower_bound_bytes = 0;         // peak of live planned bytes: no plan can do better
  double planned_over_lower_bound = 1;  // planned_bytes / lower_bound_bytes (1 when both are 0)
  size_t no_reuse_bytes = 0;            // what the planned region would take without reuse
  size_t persistent_bytes = 0;          // the persistent region
  size_t total_bytes = 0;               // the whole arena
};

// Human-readable multi-line report (one line per non-empty category, then the totals).
std::string format_memory_report(const MemoryReport& report);

class Planner {
 public:
  // A buffer of the planned region. Names must be unique (LS_ERR_INVALID_ARGUMENT otherwise).
  BufferId declare(std::string name, MemCategory category, size_t bytes,
                   size_t align = kMinBufferAlign);
  // A buffer of the persistent region, alive for the whole run.
  BufferId declare_persistent(std::string name, MemCategory category, size_t bytes,
                              size_t align = kMinBufferAlign);

  // Extends a planned buffer's lifetime to include `position` (>= 0). A no-op for persistent
  // buffers, so the dry run may touch every buffer it reads or writes.
  void use(BufferId id, int64_t position);
  // use(id, position()).
  void use(BufferId id) { use(id, position_); }

  // The schedule counter for the dry run: position() is the current position, tick() advances
  // it by one and returns the new value.
  int64_t position() const { return position_; }
  int64_t tick() { return ++position_; }

  size_t size() const { return buffers_.size(); }
  const BufferDesc& buffer(BufferId id) const;
  // The buffer with this name, or an invalid id.
  BufferId find(const std::string& name) const;

  // Places every buffer (see the file comment). Runs check() when LS_DEBUG_CHECKS is defined.
  Plan plan() const;

  // Proves `plan` sound for THIS planner's buffers (sizes, alignments, lifetimes), which may
  // differ from those of the planner that made it: a plan made at the maximum sizes can be checked
  // against a planner holding smaller ones. Throws LS_ERR_INTERNAL naming both buffers of the
  // first overlap found, or the buffer whose offset is misaligned or out of its region.
  void check(const Plan& plan) const;

  MemoryReport report(const Plan& plan) const;

 private:
  BufferId add(std::string name, MemCategory category, size_t bytes, size_t align, bool persistent);

  std::vector<BufferDesc> buffers_;
  std::unordered_map<std::string, int32_t> by_name_;
  int64_t position_ = 0;
};

// Sub-allocator for one flat buffer holding many tensors (all parameters in one fp32 master
// buffer, all gradients in one gradient buffer, ...). Works in ELEMENTS so the same layout serves
// flat buffers of different element types: tensor i sits at element offset(i) in the master
// weights, the working copy, the gradients and each moment. Each tensor starts at a multiple of
// `align_elements` (so every tensor's start is aligned in every flat buffer when the buffers are).
class FlatLayout {
 public:
  explicit FlatLayout(size_t align_elements = 64);
  // Returns the element offset of the new tensor. Names must be unique.
  size_t add(const std::string& name, size_t elements);
  size_t offset(const std::string& name) const;  // LS_ERR_INVALID_ARGUMENT if unknown
  size_t elements(const std::string& name) const;
  // Total elements, rounded up to align_elements: the size to declare, times the element size.
  size_t total_elements() const { return total_; }
  size_t count() const { return entries_.size(); }

  struct Entry {
    std::string name;
    size_t offset;
    size_t elements;
  };
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  size_t align_;
  size_t total_ = 0;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> by_name_;
};

}  // namespace ls
