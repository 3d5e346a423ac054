// Exec: how a layer reaches memory and kernels, in one of two modes.
//
// - Dry run (planning): buffer addresses are placeholders and every Ops call only advances the
//   planner's schedule position; each buffer a layer touches records a use at the current
//   position. Running forward + backward this way at the maximum shapes yields every buffer's
//   lifetime from the very code that runs the real step, so the plan and the step can never
//   disagree.
// - Real run: addresses come from the plan and the arena; Ops calls run kernels.
#pragma once

#include <cstdint>
#include <memory>

#include "allocator/planner.h"
#include "layers/kernels/ops.h"

namespace ls {

// An Ops whose every call records uses of the buffers it is given and ticks the schedule.
std::unique_ptr<Ops> make_schedule_ops(Planner& planner);

// Dry-run addresses: buffer i is represented by (i + 1) << 40, so any pointer into it (base
// plus an offset below 1 TiB) maps back to i. Addresses below 1 << 40 (null, the weights'
// placeholder) map to no buffer.
constexpr int kPlaceholderShift = 40;
void* placeholder(BufferId id);
int32_t placeholder_index(const void* p);

class Exec {
 public:
  // Dry run.
  explicit Exec(Planner& planner);
  // Real run: buffers live at base + plan.arena_offset(id).
  Exec(Ops& ops, const Plan& plan, std::byte* base);
  ~Exec();

  bool dry() const { return planner_ != nullptr; }
  Ops& ops() { return *ops_; }
  void* ptr(BufferId id);
  template <class T>
  T* as(BufferId id) {
    return static_cast<T*>(ptr(id));
  }

 private:
  Planner* planner_ = nullptr;
  std::unique_ptr<Ops> schedule_ops_;
  Ops* ops_ = nullptr;
  const Plan* plan_ = nullptr;
  std::byte* base_ = nullptr;
};

}  // namespace ls
