// Arena and counted allocation: host arenas are aligned, writable and counted; a request that
// cannot be met fails with LS_ERR_OUT_OF_MEMORY and the byte count; addresses follow the plan;
// moves transfer ownership without a double free. On a CUDA build with a GPU, the same for device
// arenas (without a GPU those cases only report that they did not run).
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "allocator/alloc_stats.h"
#include "allocator/arena.h"
#include "allocator/planner.h"
#include "runtime/error.h"

#if LS_HAVE_CUDA
#include <cuda_runtime.h>
#endif

using ls::Arena;
using ls::MemoryKind;

namespace {

template <typename Fn>
ls::Error catch_error(Fn&& fn) {
  try {
    fn();
  } catch (const ls::Error& e) {
    return e;
  }
  FAIL("no ls::Error was thrown");
  return ls::Error(LS_OK, "");
}

bool aligned(const void* p, size_t align) {
  return reinterpret_cast<uintptr_t>(p) % align == 0;
}

}  // namespace

TEST_CASE("a host arena is 256-byte aligned, writable, and counted once") {
  const ls::AllocCounters before = ls::alloc_counters();
  {
    Arena arena(MemoryKind::Host, 100000);
    CHECK(arena.size() == 100000);
    CHECK(arena.kind() == MemoryKind::Host);
    REQUIRE(arena.base() != nullptr);
    CHECK(aligned(arena.base(), 256));
    std::memset(arena.base(), 0xab, arena.size());
    CHECK(static_cast<unsigned char>(arena.base()[arena.size() - 1]) == 0xab);

    const ls::AllocCounters during = ls::alloc_counters();
    CHECK(during.host_allocs == before.host_allocs + 1);
    CHECK(during.host_bytes == before.host_bytes + 100000);
    CHECK(during.bytes == during.host_bytes + during.device_bytes);
    CHECK(during.host_frees == before.host_frees);
    CHECK(during.device_allocs == before.device_allocs);
  }
  const ls::AllocCounters after = ls::alloc_counters();
  CHECK(after.host_frees == before.host_frees + 1);
}

TEST_CASE("a host arena honours a larger base alignment") {
  for (size_t align : {size_t{512}, size_t{4096}, size_t{65536}}) {
    Arena arena(MemoryKind::Host, 1000, align);
    CHECK(arena.alignment() == align);
    CHECK(aligned(arena.base(), align));
  }
  CHECK(catch_error([] { Arena bad(MemoryKind::Host, 1000, 300); }).status() ==
        LS_ERR_INVALID_ARGUMENT);
}

TEST_CASE("an absurd host request fails with LS_ERR_OUT_OF_MEMORY naming the bytes") {
  const ls::AllocCounters before = ls::alloc_counters();
  const size_t absurd = size_t{1} << 62;
  const ls::Error e = catch_error([&] { Arena arena(MemoryKind::Host, absurd); });
  CHECK(e.status() == LS_ERR_OUT_OF_MEMORY);
  const std::string msg = e.what();
  INFO("message: " << msg);
  CHECK(msg.find("4611686018427387904") != std::string::npos);
  CHECK(msg.find("EiB") != std::string::npos);
  const ls::AllocCounters after = ls::alloc_counters();
  CHECK(after.host_allocs == before.host_allocs);

  // Sizes so large that rounding to the alignment would wrap are refused the same way.
  CHECK(catch_error([] { ls::host_aligned_alloc(SIZE_MAX - 10, 256); }).status() ==
        LS_ERR_OUT_OF_MEMORY);
}

TEST_CASE("host_aligned_alloc counts calls and bytes, and checks the alignment") {
  const ls::AllocCounters before = ls::alloc_counters();
  void* p = ls::host_aligned_alloc(1000, 64);  // raised to 256
  REQUIRE(p != nullptr);
  CHECK(aligned(p, 256));
  void* q = ls::host_aligned_alloc(10, 8192);
  CHECK(aligned(q, 8192));
  CHECK(ls::host_aligned_alloc(0) == nullptr);
  const ls::AllocCounters mid = ls::alloc_counters();
  CHECK(mid.host_allocs == before.host_allocs + 2);
  CHECK(mid.host_bytes == before.host_bytes + 1010);
  ls::host_aligned_free(p);
  ls::host_aligned_free(q);
  ls::host_aligned_free(nullptr);
  CHECK(ls::alloc_counters().host_frees == before.host_frees + 2);
  CHECK(catch_error([] { ls::host_aligned_alloc(100, 384); }).status() == LS_ERR_INVALID_ARGUMENT);
}

TEST_CASE("an empty arena allocates nothing") {
  const ls::AllocCounters before = ls::alloc_counters();
  Arena empty(MemoryKind::Host, 0);
  Arena none;
  CHECK(empty.base() == nullptr);
  CHECK(empty.size() == 0);
  CHECK(none.size() == 0);
  CHECK(ls::alloc_counters().host_allocs == before.host_allocs);
}

TEST_CASE("moving an arena transfers the memory; it is freed exactly once") {
  const ls::AllocCounters before = ls::alloc_counters();
  {
    Arena a(MemoryKind::Host, 4096);
    std::byte* base = a.base();
    Arena b(std::move(a));
    CHECK(b.base() == base);
    CHECK(b.size() == 4096);
    CHECK(a.base() == nullptr);  // NOLINT(bugprone-use-after-move): moved-from state is defined
    CHECK(a.size() == 0);
    Arena c(MemoryKind::Host, 512);
    c = std::move(b);  // frees c's own block, takes b's
    CHECK(c.base() == base);
    CHECK(ls::alloc_counters().host_frees == before.host_frees + 1);
  }
  const ls::AllocCounters after = ls::alloc_counters();
  CHECK(after.host_allocs == before.host_allocs + 2);
  CHECK(after.host_frees == before.host_frees + 2);
}

TEST_CASE("release frees now and leaves the arena empty") {
  const ls::AllocCounters before = ls::alloc_counters();
  Arena a(MemoryKind::Host, 1024);
  a.release();
  CHECK(a.base() == nullptr);
  CHECK(a.size() == 0);
  a.release();  // twice is harmless
  CHECK(ls::alloc_counters().host_frees == before.host_frees + 1);
}

TEST_CASE("buffer addresses are the arena base plus the planned offset, bounds checked") {
  ls::Planner planner;
  ls::BufferId params = planner.declare_persistent("params", ls::MemCategory::Parameters, 1000);
  ls::BufferId act = planner.declare("act", ls::MemCategory::SavedActivations, 5000, 4096);
  ls::BufferId tmp = planner.declare("tmp", ls::MemCategory::Temporaries, 300);
  ls::BufferId unused = planner.declare("unused", ls::MemCategory::Temporaries, 300);
  planner.use(act, 0);
  planner.use(act, 2);
  planner.use(tmp, 1);
  const ls::Plan plan = planner.plan();
  planner.check(plan);

  Arena arena = Arena::for_plan(MemoryKind::Host, plan);
  CHECK(arena.size() == plan.total_bytes);
  CHECK(aligned(arena.base(), plan.base_align));
  CHECK(arena.address(plan, params) == arena.base());
  CHECK(arena.address(plan, act) == arena.base() + plan.arena_offset(act));
  CHECK(aligned(arena.address(plan, act), 4096));
  CHECK(arena.address(plan, tmp) ==
        arena.base() + plan.planned_base + plan.placements[tmp.index].offset);
  CHECK(catch_error([&] { arena.address(plan, unused); }).status() == LS_ERR_INTERNAL);

  CHECK(arena.at(0, arena.size()) == arena.base());
  CHECK(catch_error([&] { arena.at(1, arena.size()); }).status() == LS_ERR_INTERNAL);
  CHECK(catch_error([&] { arena.at(SIZE_MAX, 2); }).status() == LS_ERR_INTERNAL);

  // A plan larger than the arena is refused, not overrun.
  Arena small(MemoryKind::Host, 256);
  CHECK(catch_error([&] { small.address(plan, tmp); }).status() == LS_ERR_INTERNAL);
}

TEST_CASE("format_bytes gives bytes and a binary unit") {
  CHECK(ls::format_bytes(100) == "100 bytes");
  CHECK(ls::format_bytes(4096) == "4096 bytes (4.00 KiB)");
  CHECK(ls::format_bytes(size_t{3} << 29) == "1610612736 bytes (1.50 GiB)");
}

#if LS_HAVE_CUDA

namespace {
bool have_gpu() {
  int count = 0;
  const bool ok = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  (void)cudaGetLastError();
  return ok;
}
}  // namespace

TEST_CASE("a device arena is allocated once, counted, usable and freed") {
  if (!have_gpu()) {
    MESSAGE("no GPU: device arena not tested");
    return;
  }
  const ls::AllocCounters before = ls::alloc_counters();
  {
    Arena arena(MemoryKind::Device, size_t{64} << 20, 65536);
    REQUIRE(arena.base() != nullptr);
    CHECK(aligned(arena.base(), 65536));
    CHECK(cudaMemset(arena.base(), 0x5a, arena.size()) == cudaSuccess);
    unsigned char last = 0;
    CHECK(cudaMemcpy(&last, arena.base() + arena.size() - 1, 1, cudaMemcpyDeviceToHost) ==
          cudaSuccess);
    CHECK(last == 0x5a);
    const ls::AllocCounters during = ls::alloc_counters();
    CHECK(during.device_allocs == before.device_allocs + 1);
    CHECK(during.device_bytes >= before.device_bytes + (size_t{64} << 20));
  }
  CHECK(ls::alloc_counters().device_frees == before.device_frees + 1);
}

TEST_CASE("a device request beyond free memory fails with both byte counts") {
  if (!have_gpu()) {
    MESSAGE("no GPU: device out-of-memory not tested");
    return;
  }
  const ls::AllocCounters before = ls::alloc_counters();
  size_t free_bytes = 0, total_bytes = 0;
  REQUIRE(cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess);
  const size_t request = total_bytes * 2;
  const ls::Error e = catch_error([&] { Arena arena(MemoryKind::Device, request); });
  CHECK(e.status() == LS_ERR_OUT_OF_MEMORY);
  const std::string msg = e.what();
  INFO("message: " << msg);
  CHECK(msg.find(std::to_string(request)) != std::string::npos);
  CHECK(msg.find("GiB") != std::string::npos);
  CHECK(msg.find("free") != std::string::npos);
  CHECK(ls::alloc_counters().device_allocs == before.device_allocs);
  CHECK(cudaGetLastError() == cudaSuccess);  // no sticky error left behind
}

#else

TEST_CASE("without the CUDA backend a device arena is LS_ERR_UNSUPPORTED") {
  const ls::Error e = catch_error([] { Arena arena(MemoryKind::Device, 1024); });
  CHECK(e.status() == LS_ERR_UNSUPPORTED);
  CHECK(std::string(e.what()).find("1024") != std::string::npos);
}

#endif
