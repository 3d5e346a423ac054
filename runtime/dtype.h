// Element types inside the runtime. F64 exists only on the CPU backend (gradient checks).
#pragma once

#include <cstddef>
#include <cstdint>

namespace ls {

enum class DType : uint8_t { F32 = 0, F16 = 1, BF16 = 2, F64 = 3 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::F64: return 8;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "fp32";
    case DType::F16: return "fp16";
    case DType::BF16: return "bf16";
    case DType::F64: return "fp64";
  }
  return "?";
}

// The type statistics, master weights, gradients and optimizer moments are kept in for a
// given working type: double for the double-precision CPU reference, float otherwise.
inline DType accum_dtype(DType working) { return working == DType::F64 ? DType::F64 : DType::F32; }

}  // namespace ls
