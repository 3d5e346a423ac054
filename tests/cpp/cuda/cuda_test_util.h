// Helpers for the CUDA kernel tests: device buffers, host-side fp16/bf16 rounding, upload and
// download in any working type, NaN poisoning, and the relative-norm comparison against the
// CPU reference.
//
// Method: inputs are drawn in fp32, rounded to the working type dt on the host, uploaded in dt
// for the CUDA kernel, and given (as the same rounded fp32 values) to make_cpu_ops() in F32.
// So both sides see identical inputs; what differs is the CUDA side's fp32 accumulation order
// and the rounding of its outputs to dt. Tolerances below follow from that.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "layers/kernels/backends.h"
#include "layers/kernels/ops.h"

namespace lstest {

using ls::DType;

inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) FAIL(what << ": " << cudaGetErrorString(e));
}

// An owned device allocation.
struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  DevBuf() = default;
  explicit DevBuf(size_t n) : bytes(n) {
    if (n > 0) cuda_ok(cudaMalloc(&p, n), "cudaMalloc");
  }
  DevBuf(DevBuf&& o) noexcept : p(o.p), bytes(o.bytes) {
    o.p = nullptr;
    o.bytes = 0;
  }
  DevBuf& operator=(DevBuf&& o) noexcept {
    std::swap(p, o.p);
    std::swap(bytes, o.bytes);
    return *this;
  }
  DevBuf(const DevBuf&) = delete;
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  template <class T = void>
  T* as() const {
    return static_cast<T*>(p);
  }
};

// The value x takes once stored in dt (round to nearest even, as the device conversions).
inline float round_to(DType dt, float x) {
  switch (dt) {
    case DType::F16:
      return __half2float(__float2half_rn(x));
    case DType::BF16:
      return __bfloat162float(__float2bfloat16_rn(x));
    default:
      return x;
  }
}
inline std::vector<float> rounded(DType dt, std::vector<float> v) {
  for (float& x : v) x = round_to(dt, x);
  return v;
}

inline std::vector<uint8_t> encode(DType dt, const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * ls::dtype_size(dt));
  for (size_t i = 0; i < v.size(); ++i) {
    if (dt == DType::F32) {
      std::memcpy(out.data() + 4 * i, &v[i], 4);
    } else if (dt == DType::F16) {
      __half h = __float2half_rn(v[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    } else {
      __nv_bfloat16 h = __float2bfloat16_rn(v[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}
inline std::vector<float> decode(DType dt, const std::vector<uint8_t>& b, size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    if (dt == DType::F32) {
      std::memcpy(&v[i], b.data() + 4 * i, 4);
    } else if (dt == DType::F16) {
      __half h;
      std::memcpy(&h, b.data() + 2 * i, 2);
      v[i] = __half2float(h);
    } else {
      __nv_bfloat16 h;
      std::memcpy(&h, b.data() + 2 * i, 2);
      v[i] = __bfloat162float(h);
    }
  }
  return v;
}

inline DevBuf upload(const std::vector<float>& v, DType dt) {
  auto bytes = encode(dt, v);
  DevBuf b(bytes.size());
  if (!bytes.empty())
    cuda_ok(cudaMemcpy(b.p, bytes.data(), bytes.size(), cudaMemcpyHostToDevice), "upload");
  // CudaOps runs on its own non-blocking stream, which does not wait for the legacy default
  // stream used here: finish the copy before any kernel may read it.
  cuda_ok(cudaDeviceSynchronize(), "upload");
  return b;
}
template <class T>
inline DevBuf upload_raw(const std::vector<T>& v) {
  DevBuf b(v.size() * sizeof(T));
  if (!v.empty()) cuda_ok(cudaMemcpy(b.p, v.data(), b.bytes, cudaMemcpyHostToDevice), "upload");
  cuda_ok(cudaDeviceSynchronize(), "upload");  // as upload(): before CudaOps' stream reads it
  return b;
}
// n elements of dt, every byte 0xFF: NaN in fp32, fp16 and bf16, so an element the kernel does
// not write fails the comparison.
inline DevBuf poisoned(size_t n, DType dt) {
  DevBuf b(n * ls::dtype_size(dt));
  if (b.bytes) cuda_ok(cudaMemset(b.p, 0xFF, b.bytes), "poison");
  cuda_ok(cudaDeviceSynchronize(), "poison");  // cudaMemset is asynchronous (see upload)
  return b;
}
inline std::vector<float> download(const DevBuf& b, DType dt, size_t n) {
  cuda_ok(cudaDeviceSynchronize(), "synchronize");
  std::vector<uint8_t> bytes(n * ls::dtype_size(dt));
  if (n) cuda_ok(cudaMemcpy(bytes.data(), b.p, bytes.size(), cudaMemcpyDeviceToHost), "download");
  return decode(dt, bytes, n);
}

inline std::mt19937& rng() {
  static std::mt19937 gen([] {
    unsigned seed = std::random_device{}();
    MESSAGE("random seed " << seed);
    return seed;
  }());
  return gen;
}
inline std::vector<float> randn(size_t n, float scale = 1.f) {
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng());
  return v;
}
inline std::vector<float> uniform(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng());
  return v;
}

// Tolerance on the relative norm error of an output of type dt computed in fp32:
// - F32: only the accumulation order differs: ~1e-6 for the sums here; 1e-5 leaves room for
//   reductions over ~1e4 terms (error grows ~ sqrt(n) * 6e-8).
// - F16: the output is rounded to 11 significant bits, unit roundoff 2^-11 = 4.9e-4, RMS
//   relative error ~2.8e-4 per element; 1e-3 covers one rounding plus an fp32-level reduction.
// - BF16: 8 significant bits, unit roundoff 2^-8 = 3.9e-3, RMS ~2.3e-3; 1e-2.
inline double tol(DType dt) {
  switch (dt) {
    case DType::F16:
      return 1e-3;
    case DType::BF16:
      return 1e-2;
    default:
      return 1e-5;
  }
}

// ||got - want|| / ||want||; every element of got must be finite (NaN never passes; the
// poisoned buffers make an unwritten element NaN).
inline double rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  double num = 0, den = 0;
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) {
      ++bad;
      continue;
    }
    double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  if (bad) {
    FAIL_CHECK(bad << " of " << got.size() << " elements are not finite");
    return INFINITY;
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

#define CHECK_CLOSE(got, want, tolerance)                                                  \
  do {                                                                                     \
    double err_ = ::lstest::rel_err((got), (want));                                        \
    CHECK_MESSAGE(err_ <= (tolerance), "relative error " << err_ << " > " << (tolerance)); \
  } while (0)

// Dropout masks: the same elements are zero on both sides. Callers pass the reference rounded
// to dt, so values below dt's smallest subnormal count as zero on both sides.
inline size_t zero_mismatches(const std::vector<float>& got, const std::vector<float>& want) {
  size_t n = 0;
  for (size_t i = 0; i < got.size(); ++i) n += (got[i] == 0.f) != (want[i] == 0.f);
  return n;
}
// Dropout masks: elements where exactly one of got and want (the fp32 reference, rounded to dt)
// is zero, ignoring references smaller in magnitude than dt's smallest subnormal: there a
// few-ulp difference in fp32 (e.g. GELU's tail for very negative inputs) legitimately decides
// whether the value rounds to zero.
inline size_t mask_mismatches(const std::vector<float>& got, const std::vector<float>& want,
                              DType dt) {
  const double tiny = dt == DType::F16 ? 0x1p-24 : dt == DType::BF16 ? 0x1p-133 : 0x1p-149;
  size_t n = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::fabs(double(want[i])) < tiny) continue;
    n += (got[i] == 0.f) != (round_to(dt, want[i]) == 0.f);
  }
  return n;
}
inline size_t zero_count(const std::vector<float>& v) {
  size_t n = 0;
  for (float x : v) n += x == 0.f;
  return n;
}

inline std::string dtype_str(DType dt) {
  return std::string(ls::dtype_name(dt));
}
inline std::vector<DType> working_types() {
  return {DType::F32, DType::F16, DType::BF16};
}

}  // namespace lstest
