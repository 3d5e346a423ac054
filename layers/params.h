// The parameter set of a model: named tensors laid out in flat buffers (FlatLayout), so the
// fp32 master weights, the working copy, the gradients and each Adam moment share element
// offsets and one fused launch covers them all. Tied tensors (shared embeddings) are one entry
// with several names.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "allocator/planner.h"
#include "runtime/dtype.h"

namespace ls {

struct ParamRef {
  size_t offset = 0;  // in elements, within every flat buffer
  size_t numel = 0;
  bool valid() const { return numel > 0; }
};

enum class InitKind : uint8_t {
  Zeros,
  Ones,
  XavierUniform,  // U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)), per block of block_rows
  Normal,         // N(0, std), row padding_row (if >= 0) zero
};

struct ParamInit {
  InitKind kind = InitKind::Zeros;
  double gain = 1.0;
  double std = 0.0;
  int64_t fan_in = 0, fan_out = 0;
  int64_t block_rows = 0;  // XavierUniform: rows per independently initialised block (0 = all)
  int64_t padding_row = -1;
};

struct ParamEntry {
  std::string name;
  std::vector<int64_t> shape;
  ParamRef ref;
  ParamInit init;
  // The gradient is written whole by weight-gradient GEMMs, each element by one GEMM, before
  // anything else adds to it in a training pass, so a pass whose gradients start from zero runs
  // those GEMMs with beta = 0 and needs no zeroing of this tensor's gradient.
  bool grad_overwritten = false;
};

class ParamSet {
 public:
  ParamSet() : layout_(64) {}
  ParamRef add(const std::string& name, std::vector<int64_t> shape, ParamInit init);
  // Makes `name` another name of an existing tensor (tying).
  void alias(const std::string& name, const std::string& existing);
  // Marks the tensor at `ref` as ParamEntry::grad_overwritten (its layer runs the GEMMs with
  // RunCtx::weight_grad_beta()).
  void set_grad_overwritten(ParamRef ref);
  // Element ranges [begin, end) of the flat buffers, sorted and merged, that hold no
  // grad_overwritten tensor: what a fresh training pass zeroes in the gradient buffer (the
  // accumulated gradients and the alignment gaps between tensors).
  std::vector<std::pair<size_t, size_t>> accumulated_ranges() const;

  size_t total_elements() const { return layout_.total_elements(); }
  // Distinct tensors (aliases not counted), in declaration order.
  const std::vector<ParamEntry>& entries() const { return entries_; }
  // Number of scalar parameters (aliases counted once).
  uint64_t num_parameters() const;
  // Throws LS_ERR_INVALID_ARGUMENT naming the parameter when unknown.
  const ParamEntry& find(const std::string& name) const;

  // Fills a host buffer of total_elements() doubles with the initial values, from `seed`.
  void initialize(std::vector<double>& values, uint64_t seed) const;

 private:
  FlatLayout layout_;
  std::vector<ParamEntry> entries_;
  std::unordered_map<std::string, size_t> by_name_;
};

// Pointers to the flat parameter buffers of one model.
struct WeightsView {
  DType dt = DType::F32;   // working type
  DType acc = DType::F32;  // master / gradient type
  std::byte* master = nullptr;
  std::byte* work = nullptr;  // == master when dt == acc
  std::byte* grad = nullptr;
  const void* w(ParamRef r) const { return work + r.offset * dtype_size(dt); }
  void* g(ParamRef r) const { return grad + r.offset * dtype_size(acc); }
  // Element `row * cols` of a parameter: a slice of rows (e.g. K/V rows of in_proj_weight).
  const void* w_rows(ParamRef r, int64_t row, int64_t cols) const {
    return work + (r.offset + static_cast<size_t>(row * cols)) * dtype_size(dt);
  }
  void* g_rows(ParamRef r, int64_t row, int64_t cols) const {
    return grad + (r.offset + static_cast<size_t>(row * cols)) * dtype_size(acc);
  }
};

}  // namespace ls
