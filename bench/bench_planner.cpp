// Planner benchmark: time to plan (and to check) schedules shaped like a Transformer training
// step with many layers, and the planned size against the lower bound (peak live bytes).
// Prints results; asserts nothing.
//
// Schedule per layer (forward): 10 saved activations alive until the layer's backward, 3
// temporaries alive for 1-2 positions; backward (reverse order): 8 gradient temporaries. Sizes
// are tokens x hidden x {1, 3, 4} and tokens x heads x len for attention.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "allocator/planner.h"
#include "runtime/error.h"

namespace {

ls::Planner build(int layers, size_t tokens, size_t len, size_t H, size_t NH) {
  ls::Planner p;
  const size_t act = tokens * H * 2, scores = tokens * NH * len * 2;
  const size_t saved_sizes[] = {act, act,     3 * act, scores,  scores / 2,
                                act, act / 2, act,     4 * act, 2 * act};
  const size_t temp_sizes[] = {scores, act, 4 * act};
  const size_t grad_sizes[] = {4 * act, act, act, act, scores, 3 * act, act, act};
  std::vector<std::vector<ls::BufferId>> saved(layers);
  for (int l = 0; l < layers; ++l) {
    for (size_t i = 0; i < sizeof saved_sizes / sizeof saved_sizes[0]; ++i) {
      ls::BufferId id = p.declare("l" + std::to_string(l) + ".s" + std::to_string(i),
                                  ls::MemCategory::SavedActivations, saved_sizes[i]);
      p.use(id);
      saved[l].push_back(id);
      if (i < 3) {
        ls::BufferId t = p.declare("l" + std::to_string(l) + ".t" + std::to_string(i),
                                   ls::MemCategory::Temporaries, temp_sizes[i]);
        p.use(t);
        p.tick();
        p.use(t);
      }
      p.tick();
    }
  }
  for (int l = layers - 1; l >= 0; --l) {
    ls::BufferId prev{};
    for (size_t i = 0; i < sizeof grad_sizes / sizeof grad_sizes[0]; ++i) {
      ls::BufferId g = p.declare("l" + std::to_string(l) + ".g" + std::to_string(i),
                                 ls::MemCategory::Temporaries, grad_sizes[i]);
      p.use(g);
      if (prev.valid()) p.use(prev);
      p.use(saved[l][i % saved[l].size()]);
      p.tick();
      prev = g;
    }
    for (ls::BufferId s : saved[l]) p.use(s);
    p.use(prev);
    p.tick();
  }
  return p;
}

}  // namespace

int main() {
  try {
    std::printf("%8s %8s %6s %10s %12s %12s %8s %10s %10s\n", "layers", "tokens", "len", "buffers",
                "planned MiB", "bound MiB", "ratio", "plan ms", "check ms");
    const int layer_counts[] = {6, 24, 96, 384};
    for (int layers : layer_counts) {
      const ls::Planner p = build(layers, 8192, 256, 1024, 16);
      auto t0 = std::chrono::steady_clock::now();
      const ls::Plan plan = p.plan();
      auto t1 = std::chrono::steady_clock::now();
      p.check(plan);
      auto t2 = std::chrono::steady_clock::now();
      const ls::MemoryReport r = p.report(plan);
      std::printf("%8d %8d %6d %10zu %12.1f %12.1f %8.4f %10.2f %10.2f\n", layers, 8192, 256,
                  p.size(), r.planned_bytes / 1048576.0, r.lower_bound_bytes / 1048576.0,
                  r.planned_over_lower_bound,
                  std::chrono::duration<double, std::milli>(t1 - t0).count(),
                  std::chrono::duration<double, std::milli>(t2 - t1).count());
    }
  } catch (const ls::Error& e) {
    std::fprintf(stderr, "bench_planner: %s\n", e.what());
    return 1;
  }
  return 0;
}
