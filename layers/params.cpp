#include "layers/params.h"

#include <cmath>
#include <random>

#include "runtime/error.h"

namespace ls {

ParamRef ParamSet::add(const std::string& name, std::vector<int64_t> shape, ParamInit init) {
  LS_REQUIRE(!by_name_.count(name), LS_ERR_INTERNAL, "parameter '" << name << "' declared twice");
  size_t numel = 1;
  for (int64_t s : shape) {
    LS_REQUIRE(s > 0, LS_ERR_INVALID_ARGUMENT, "parameter '" << name << "' has a dimension " << s);
    numel *= static_cast<size_t>(s);
  }
  ParamEntry e;
  e.name = name;
  e.shape = std::move(shape);
  e.ref.offset = layout_.add(name, numel);
  e.ref.numel = numel;
  e.init = init;
  by_name_[name] = entries_.size();
  entries_.push_back(e);
  return e.ref;
}

void ParamSet::alias(const std::string& name, const std::string& existing) {
  auto it = by_name_.find(existing);
  LS_REQUIRE(it != by_name_.end(), LS_ERR_INTERNAL, "alias of unknown parameter " << existing);
  by_name_[name] = it->second;
}

void ParamSet::set_grad_overwritten(ParamRef ref) {
  for (ParamEntry& e : entries_)
    if (e.ref.offset == ref.offset && e.ref.numel == ref.numel) {
      e.grad_overwritten = true;
      return;
    }
  LS_FAIL(LS_ERR_INTERNAL, "set_grad_overwritten: no tensor at element " << ref.offset);
}

std::vector<std::pair<size_t, size_t>> ParamSet::accumulated_ranges() const {
  std::vector<std::pair<size_t, size_t>> out;
  size_t at = 0;  // entries_ are in layout order, one after another
  auto add = [&](size_t b, size_t e) {
    if (e <= b) return;
    if (!out.empty() && out.back().second == b)
      out.back().second = e;
    else
      out.emplace_back(b, e);
  };
  for (const ParamEntry& e : entries_) {
    if (!e.grad_overwritten) continue;
    add(at, e.ref.offset);
    at = e.ref.offset + e.ref.numel;
  }
  add(at, total_elements());
  return out;
}

uint64_t ParamSet::num_parameters() const {
  uint64_t n = 0;
  for (const auto& e : entries_) n += e.ref.numel;
  return n;
}

const ParamEntry& ParamSet::find(const std::string& name) const {
  auto it = by_name_.find(name);
  LS_CHECK_ARG(it != by_name_.end(), "no parameter named '" << name << "'");
  return entries_[it->second];
}

void ParamSet::initialize(std::vector<double>& values, uint64_t seed) const {
  values.assign(total_elements(), 0.0);
  for (size_t i = 0; i < entries_.size(); ++i) {
    const ParamEntry& e = entries_[i];
    // One generator per tensor, keyed by the seed and the tensor's index: adding a tensor
    // later never changes the others' values.
    std::mt19937_64 gen(seed * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull + 1);
    double* v = values.data() + e.ref.offset;
    const ParamInit& in = e.init;
    switch (in.kind) {
      case InitKind::Zeros: break;
      case InitKind::Ones:
        for (size_t j = 0; j < e.ref.numel; ++j) v[j] = 1.0;
        break;
      case InitKind::XavierUniform: {
        double a = in.gain * std::sqrt(6.0 / static_cast<double>(in.fan_in + in.fan_out));
        std::uniform_real_distribution<double> u(-a, a);
        for (size_t j = 0; j < e.ref.numel; ++j) v[j] = u(gen);
        break;
      }
      case InitKind::Normal: {
        std::normal_distribution<double> n(0.0, in.std);
        for (size_t j = 0; j < e.ref.numel; ++j) v[j] = n(gen);
        if (in.padding_row >= 0 && e.shape.size() == 2) {
          int64_t cols = e.shape[1];
          for (int64_t c = 0; c < cols; ++c) v[in.padding_row * cols + c] = 0.0;
        }
        break;
      }
    }
  }
}

}  // namespace ls
