// Memory planner: persistent layout, greedy-by-size best-fit placement of the planned region,
// the lower bound, the soundness checker and the memory report (see planner.h).
#include "allocator/planner.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <sstream>
#include <utility>

#include "allocator/alloc_stats.h"
#include "runtime/error.h"

namespace ls {
namespace {

constexpr size_t kMaxAlign = size_t{1} << 30;
// Caps one buffer at 2^60 bytes so that rounding and a few sums cannot wrap; the totals are
// also added with overflow checks.
constexpr size_t kMaxBufferBytes = size_t{1} << 60;

size_t round_up(size_t value, size_t align) {
  return (value + align - 1) & ~(align - 1);
}

size_t checked_add(size_t a, size_t b, const char* what) {
  LS_REQUIRE(a <= SIZE_MAX - b, LS_ERR_OUT_OF_MEMORY,
             "Planner::plan: " << what << " exceeds the address space");
  return a + b;
}

size_t checked_round_up(size_t value, size_t align, const char* what) {
  return checked_add(value, align - 1, what) & ~(align - 1);
}

bool lifetimes_overlap(const BufferDesc& a, const BufferDesc& b) {
  return a.first_use <= b.last_use && b.first_use <= a.last_use;
}

bool bytes_overlap(size_t a_off, size_t a_size, size_t b_off, size_t b_size) {
  return a_size > 0 && b_size > 0 && a_off < b_off + b_size && b_off < a_off + a_size;
}

}  // namespace

const char* mem_category_name(MemCategory category) {
  switch (category) {
    case MemCategory::Parameters:
      return "parameters";
    case MemCategory::WorkingCopy:
      return "working_copy";
    case MemCategory::Gradients:
      return "gradients";
    case MemCategory::OptimizerState:
      return "optimizer_state";
    case MemCategory::LossScaler:
      return "loss_scaler";
    case MemCategory::SavedActivations:
      return "saved_activations";
    case MemCategory::Temporaries:
      return "temporaries";
    case MemCategory::Workspace:
      return "workspace";
    case MemCategory::Inputs:
      return "inputs";
    case MemCategory::Count:
      break;
  }
  return "unknown";
}

size_t normalize_alignment(size_t align) {
  LS_CHECK_ARG(align <= kMaxAlign,
               "Planner: alignment " << align << " exceeds the maximum " << kMaxAlign);
  size_t a = kMinBufferAlign;
  while (a < align) a <<= 1;
  return a;
}

// ------------------------------------------------------------------------------------ Plan

size_t Plan::arena_offset(BufferId id) const {
  LS_REQUIRE(id.valid() && static_cast<size_t>(id.index) < placements.size(), LS_ERR_INTERNAL,
             "Plan::arena_offset: buffer id " << id.index << " is not in this plan ("
                                              << placements.size() << " buffers)");
  const Placement& p = placements[id.index];
  switch (p.region) {
    case MemRegion::Persistent:
      return p.offset;
    case MemRegion::Planned:
      return planned_base + p.offset;
    case MemRegion::None:
      break;
  }
  LS_FAIL(LS_ERR_INTERNAL, "Plan::arena_offset: buffer id "
                               << id.index
                               << " has no space: it was declared but never used in the dry run");
}

// --------------------------------------------------------------------------------- Planner

BufferId Planner::add(std::string name, MemCategory category, size_t bytes, size_t align,
                      bool persistent) {
  const char* call = persistent ? "Planner::declare_persistent" : "Planner::declare";
  LS_CHECK_ARG(!name.empty(), call << ": empty buffer name");
  LS_CHECK_ARG(static_cast<int>(category) >= 0 && static_cast<int>(category) < kMemCategoryCount,
               call << "(" << name << "): invalid category " << static_cast<int>(category));
  LS_CHECK_ARG(bytes <= kMaxBufferBytes, call << "(" << name << "): " << bytes
                                              << " bytes exceeds the maximum " << kMaxBufferBytes);
  LS_CHECK_ARG(buffers_.size() < static_cast<size_t>(INT32_MAX), call << ": too many buffers");
  LS_CHECK_ARG(by_name_.find(name) == by_name_.end(),
               call << ": a buffer named '" << name << "' is already declared");
  BufferDesc d;
  d.category = category;
  d.bytes = bytes;
  d.align = normalize_alignment(align);
  d.aligned_bytes = round_up(bytes, d.align);
  d.persistent = persistent;
  d.name = std::move(name);
  const int32_t index = static_cast<int32_t>(buffers_.size());
  by_name_.emplace(d.name, index);
  buffers_.push_back(std::move(d));
  return BufferId{index};
}

BufferId Planner::declare(std::string name, MemCategory category, size_t bytes, size_t align) {
  return add(std::move(name), category, bytes, align, false);
}

BufferId Planner::declare_persistent(std::string name, MemCategory category, size_t bytes,
                                     size_t align) {
  return add(std::move(name), category, bytes, align, true);
}

const BufferDesc& Planner::buffer(BufferId id) const {
  LS_CHECK_ARG(id.valid() && static_cast<size_t>(id.index) < buffers_.size(),
               "Planner::buffer: unknown buffer id " << id.index);
  return buffers_[id.index];
}

BufferId Planner::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? BufferId{} : BufferId{it->second};
}

void Planner::use(BufferId id, int64_t position) {
  LS_CHECK_ARG(id.valid() && static_cast<size_t>(id.index) < buffers_.size(),
               "Planner::use: unknown buffer id " << id.index);
  BufferDesc& d = buffers_[id.index];
  LS_CHECK_ARG(position >= 0,
               "Planner::use(" << d.name << "): negative schedule position " << position);
  if (d.persistent) return;
  if (!d.used()) {
    d.first_use = d.last_use = position;
  } else {
    d.first_use = std::min(d.first_use, position);
    d.last_use = std::max(d.last_use, position);
  }
}

Plan Planner::plan() const {
  Plan plan;
  plan.placements.assign(buffers_.size(), Placement{});

  // Persistent region: one after another, in declaration order.
  size_t cursor = 0;
  size_t planned_align = kMinBufferAlign;
  std::vector<int32_t> planned;  // used planned buffers
  for (size_t i = 0; i < buffers_.size(); ++i) {
    const BufferDesc& d = buffers_[i];
    plan.base_align = std::max(plan.base_align, d.align);
    if (d.persistent) {
      const size_t offset = checked_round_up(cursor, d.align, "the persistent region");
      plan.placements[i] = Placement{MemRegion::Persistent, offset};
      cursor = checked_add(offset, d.aligned_bytes, "the persistent region");
    } else if (d.used()) {
      planned.push_back(static_cast<int32_t>(i));
      planned_align = std::max(planned_align, d.align);
      plan.no_reuse_bytes = checked_add(plan.no_reuse_bytes, d.aligned_bytes, "the planned region");
    }
  }
  plan.persistent_bytes = checked_round_up(cursor, kMinBufferAlign, "the persistent region");
  // The planned region starts at its largest alignment so region offsets stay aligned in the
  // arena, given an arena base aligned to Plan::base_align.
  plan.planned_base = checked_round_up(plan.persistent_bytes, planned_align, "the arena");

  // Greedy by size: largest first; ties by longer lifetime, then earlier start, then declaration
  // order, so the plan is deterministic.
  std::sort(planned.begin(), planned.end(), [&](int32_t a, int32_t b) {
    const BufferDesc& x = buffers_[a];
    const BufferDesc& y = buffers_[b];
    if (x.aligned_bytes != y.aligned_bytes) return x.aligned_bytes > y.aligned_bytes;
    const int64_t lx = x.last_use - x.first_use, ly = y.last_use - y.first_use;
    if (lx != ly) return lx > ly;
    if (x.first_use != y.first_use) return x.first_use < y.first_use;
    return a < b;
  });

  // `placed` holds the buffers placed so far, sorted by offset. For each new buffer, walk them
  // in offset order, skipping those whose lifetimes do not overlap; `prev_end` is the highest end
  // among the overlapping ones seen so far, so [prev_end, next.offset) is a free gap.
  std::vector<int32_t> placed;
  placed.reserve(planned.size());
  std::vector<size_t> offset(buffers_.size(), 0);
  size_t planned_end = 0;
  for (int32_t b : planned) {
    const BufferDesc& d = buffers_[b];
    size_t best_offset = SIZE_MAX;
    size_t best_gap = SIZE_MAX;
    size_t prev_end = 0;
    for (int32_t x : placed) {
      const BufferDesc& o = buffers_[x];
      if (!lifetimes_overlap(d, o)) continue;
      const size_t start = round_up(prev_end, d.align);
      if (start <= offset[x] && offset[x] - start >= d.aligned_bytes) {
        const size_t gap = offset[x] - prev_end;
        if (gap < best_gap) {
          best_gap = gap;
          best_offset = start;
        }
      }
      prev_end = std::max(prev_end, offset[x] + o.aligned_bytes);
    }
    if (best_offset == SIZE_MAX) best_offset = round_up(prev_end, d.align);
    offset[b] = best_offset;
    plan.placements[b] = Placement{MemRegion::Planned, best_offset};
    planned_end = std::max(planned_end, best_offset + d.aligned_bytes);
    auto pos = std::upper_bound(placed.begin(), placed.end(), best_offset,
                                [&](size_t off, int32_t y) { return off < offset[y]; });
    placed.insert(pos, b);
  }
  plan.planned_bytes = round_up(planned_end, kMinBufferAlign);
  plan.total_bytes = checked_add(plan.planned_base, plan.planned_bytes, "the arena");

  // Lower bound: the peak, over schedule positions, of the bytes alive there. A buffer is alive
  // on [first_use, last_use]; at equal positions ends (at last_use + 1) come before starts.
  // ((position, 0 end / 1 start), bytes)
  std::vector<std::pair<std::pair<int64_t, int>, size_t>> ev;
  ev.reserve(planned.size() * 2);
  for (int32_t b : planned) {
    const BufferDesc& d = buffers_[b];
    ev.push_back({{d.first_use, 1}, d.aligned_bytes});
    ev.push_back({{d.last_use + 1, 0}, d.aligned_bytes});
  }
  std::sort(ev.begin(), ev.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  size_t live = 0;
  for (const auto& e : ev) {
    if (e.first.second == 1) {
      live += e.second;
      plan.lower_bound_bytes = std::max(plan.lower_bound_bytes, live);
    } else {
      live -= e.second;
    }
  }

#if defined(LS_DEBUG_CHECKS)
  check(plan);
#endif
  return plan;
}

void Planner::check(const Plan& plan) const {
  LS_REQUIRE(plan.placements.size() == buffers_.size(), LS_ERR_INTERNAL,
             "Planner::check: the plan has " << plan.placements.size() << " placements for "
                                             << buffers_.size() << " buffers");
  LS_REQUIRE(plan.persistent_bytes <= plan.planned_base &&
                 plan.planned_base % kMinBufferAlign == 0 &&
                 plan.total_bytes == plan.planned_base + plan.planned_bytes,
             LS_ERR_INTERNAL,
             "Planner::check: inconsistent regions (persistent "
                 << plan.persistent_bytes << ", planned base " << plan.planned_base << ", planned "
                 << plan.planned_bytes << ", total " << plan.total_bytes << ")");

  // Every buffer: in the right region, inside it, aligned in the arena.
  std::vector<int32_t> persistent, planned;
  for (size_t i = 0; i < buffers_.size(); ++i) {
    const BufferDesc& d = buffers_[i];
    const Placement& p = plan.placements[i];
    const MemRegion want =
        d.persistent ? MemRegion::Persistent : (d.used() ? MemRegion::Planned : MemRegion::None);
    if (want == MemRegion::None) continue;  // unused: whatever the plan says, nothing uses it
    LS_REQUIRE(p.region == want, LS_ERR_INTERNAL,
               "Planner::check: buffer '" << d.name << "' is not placed in the "
                                          << (d.persistent ? "persistent" : "planned")
                                          << " region");
    const size_t region_bytes = d.persistent ? plan.persistent_bytes : plan.planned_bytes;
    const size_t base = d.persistent ? 0 : plan.planned_base;
    LS_REQUIRE(
        p.offset <= region_bytes && d.aligned_bytes <= region_bytes - p.offset, LS_ERR_INTERNAL,
        "Planner::check: buffer '" << d.name << "' [" << p.offset << ", +" << d.aligned_bytes
                                   << ") runs past its region of " << region_bytes << " bytes");
    LS_REQUIRE(d.align <= plan.base_align, LS_ERR_INTERNAL,
               "Planner::check: buffer '" << d.name << "' needs alignment " << d.align
                                          << " but the plan's base alignment is "
                                          << plan.base_align);
    LS_REQUIRE((base + p.offset) % d.align == 0, LS_ERR_INTERNAL,
               "Planner::check: buffer '" << d.name << "' at arena offset " << base + p.offset
                                          << " is not aligned to " << d.align);
    (d.persistent ? persistent : planned).push_back(static_cast<int32_t>(i));
  }

  auto overlap_error = [&](int32_t a, int32_t b) {
    const BufferDesc& x = buffers_[a];
    const BufferDesc& y = buffers_[b];
    const Placement& px = plan.placements[a];
    const Placement& py = plan.placements[b];
    LS_FAIL(LS_ERR_INTERNAL, "Planner::check: buffers '"
                                 << x.name << "' [" << px.offset << ", "
                                 << px.offset + x.aligned_bytes << ") live [" << x.first_use << ", "
                                 << x.last_use << "] and '" << y.name << "' [" << py.offset << ", "
                                 << py.offset + y.aligned_bytes << ") live [" << y.first_use << ", "
                                 << y.last_use << "] are alive together and share bytes");
  };

  // Persistent buffers are all alive together: sorted by offset, each must start at or after
  // the furthest end so far.
  std::sort(persistent.begin(), persistent.end(), [&](int32_t a, int32_t b) {
    return plan.placements[a].offset < plan.placements[b].offset;
  });
  int32_t furthest = -1;
  size_t furthest_end = 0;
  for (int32_t b : persistent) {
    const size_t off = plan.placements[b].offset, size = buffers_[b].aligned_bytes;
    if (size == 0) continue;
    if (furthest >= 0 && off < furthest_end) overlap_error(furthest, b);
    if (off + size > furthest_end) {
      furthest_end = off + size;
      furthest = b;
    }
  }

  // Planned buffers: sweep in order of first use, keeping those still alive; every one alive at
  // a buffer's first use overlaps it in time, and any pair overlapping in time is met this way.
  std::sort(planned.begin(), planned.end(),
            [&](int32_t a, int32_t b) { return buffers_[a].first_use < buffers_[b].first_use; });
  std::vector<int32_t> alive;
  for (int32_t b : planned) {
    const BufferDesc& d = buffers_[b];
    alive.erase(std::remove_if(alive.begin(), alive.end(),
                               [&](int32_t a) { return buffers_[a].last_use < d.first_use; }),
                alive.end());
    for (int32_t a : alive) {
      if (bytes_overlap(plan.placements[a].offset, buffers_[a].aligned_bytes,
                        plan.placements[b].offset, d.aligned_bytes))
        overlap_error(a, b);
    }
    alive.push_back(b);
  }
}

MemoryReport Planner::report(const Plan& plan) const {
  MemoryReport r;
  for (const BufferDesc& d : buffers_) {
    if (d.persistent || d.used()) r.category_bytes[static_cast<int>(d.category)] += d.aligned_bytes;
  }
  r.planned_bytes = plan.planned_bytes;
  r.lower_bound_bytes = plan.lower_bound_bytes;
  r.planned_over_lower_bound =
      plan.lower_bound_bytes == 0
          ? 1.0
          : static_cast<double>(plan.planned_bytes) / static_cast<double>(plan.lower_bound_bytes);
  r.no_reuse_bytes = plan.no_reuse_bytes;
  r.persistent_bytes = plan.persistent_bytes;
  r.total_bytes = plan.total_bytes;
  return r;
}

std::string format_memory_report(const MemoryReport& r) {
  std::ostringstream os;
  for (int i = 0; i < kMemCategoryCount; ++i) {
    if (r.category_bytes[i] == 0) continue;
    os << "  " << mem_category_name(static_cast<MemCategory>(i)) << ": "
       << format_bytes(r.category_bytes[i]) << "\n";
  }
  char ratio[32];
  std::snprintf(ratio, sizeof ratio, "%.4f", r.planned_over_lower_bound);
  os << "  persistent region: " << format_bytes(r.persistent_bytes) << "\n"
     << "  planned region: " << format_bytes(r.planned_bytes) << "\n"
     << "  lower bound (peak live): " << format_bytes(r.lower_bound_bytes) << " (planned/bound "
     << ratio << ")\n"
     << "  without reuse: " << format_bytes(r.no_reuse_bytes) << "\n"
     << "  total: " << format_bytes(r.total_bytes) << "\n";
  return os.str();
}

// ------------------------------------------------------------------------------ FlatLayout

FlatLayout::FlatLayout(size_t align_elements) : align_(align_elements) {
  LS_CHECK_ARG(align_elements != 0 && (align_elements & (align_elements - 1)) == 0,
               "FlatLayout: alignment of " << align_elements << " elements is not a power of two");
}

size_t FlatLayout::add(const std::string& name, size_t elements) {
  LS_CHECK_ARG(by_name_.find(name) == by_name_.end(),
               "FlatLayout::add: a tensor named '" << name << "' is already in the layout");
  LS_CHECK_ARG(elements <= kMaxBufferBytes && total_ <= kMaxBufferBytes - elements,
               "FlatLayout::add(" << name << "): " << elements << " elements overflow the layout");
  const size_t offset = total_;
  total_ = round_up(total_ + elements, align_);
  by_name_.emplace(name, entries_.size());
  entries_.push_back(Entry{name, offset, elements});
  return offset;
}

size_t FlatLayout::offset(const std::string& name) const {
  auto it = by_name_.find(name);
  LS_CHECK_ARG(it != by_name_.end(), "FlatLayout::offset: no tensor named '" << name << "'");
  return entries_[it->second].offset;
}

size_t FlatLayout::elements(const std::string& name) const {
  auto it = by_name_.find(name);
  LS_CHECK_ARG(it != by_name_.end(), "FlatLayout::elements: no tensor named '" << name << "'");
  return entries_[it->second].elements;
}

}  // namespace ls
