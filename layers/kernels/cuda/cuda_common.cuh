// Internal helpers shared by the CUDA kernel files: error-check macros that turn CUDA and
// cuBLASLt failures into ls::Error naming the call, fp32/fp16/bf16 load/store helpers (all
// arithmetic is done in fp32), 4-element packs for vectorised access, warp/block reductions,
// dropout mask generation from Philox (8 elements per Philox call when the group starts at a
// flat index that is a multiple of 8, as philox.h lays out the 16-bit lanes), and the dtype
// dispatch.
// For the bandwidth-bound kernels also: 8-element (16-byte) loads/stores, 8-element dropout
// factors, GELU through ex2 instead of tanhf, and a division-free 32-bit divider.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <utility>

#include "layers/kernels/philox.h"
#include "runtime/dtype.h"
#include "runtime/error.h"

// Checks a CUDA runtime call; throws ls::Error(LS_ERR_CUDA, "<call>: <error string>").
#define LS_CUDA_CALL(call)                                                                  \
  do {                                                                                      \
    cudaError_t ls_cu_err_ = (call);                                                        \
    if (ls_cu_err_ != cudaSuccess) {                                                        \
      (void)cudaGetLastError();                                                             \
      LS_FAIL(ls_cu_err_ == cudaErrorMemoryAllocation ? LS_ERR_OUT_OF_MEMORY : LS_ERR_CUDA, \
              #call << ": " << cudaGetErrorString(ls_cu_err_));                             \
    }                                                                                       \
  } while (0)

// Checks a cuBLASLt call; throws ls::Error(LS_ERR_CUBLAS, "<call>: <status string>").
#define LS_CUBLAS_CALL(call)                                                       \
  do {                                                                             \
    cublasStatus_t ls_cb_st_ = (call);                                             \
    if (ls_cb_st_ != CUBLAS_STATUS_SUCCESS)                                        \
      LS_FAIL(LS_ERR_CUBLAS, #call << ": " << cublasLtGetStatusString(ls_cb_st_)); \
  } while (0)

// After a kernel launch (launch_kernel): LS_DEBUG_CHECKS builds report any pending asynchronous
// error there, naming the kernel; launch-configuration errors are always caught.
#if defined(LS_DEBUG_CHECKS)
#define LS_LAUNCH_DEBUG_SYNC(name) LS_CUDA_CALL(cudaGetLastError())
#else
#define LS_LAUNCH_DEBUG_SYNC(name) \
  do {                             \
  } while (0)
#endif

namespace ls {
namespace cuda {

// ---------------------------------------------------------------- element conversion
__device__ __forceinline__ float to_f32(float x) {
  return x;
}
__device__ __forceinline__ float to_f32(__half x) {
  return __half2float(x);
}
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Four consecutive elements, loaded/stored in one access when the address is aligned to the
// pack (8 bytes for fp16/bf16, 16 bytes for fp32).
template <class T>
struct alignas(4 * sizeof(T)) Pack4 {
  T v[4];
};

// Host and device: launchers choose kernel variants with it too.
template <class T>
__host__ __device__ __forceinline__ bool pack_aligned(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) % (4 * sizeof(T))) == 0;
}

// Loads elements [i, i+4) of p as fp32; elements at or beyond n read as 0. `vec` says the
// caller proved i is a multiple of 4 and p is pack-aligned and i + 4 <= n.
template <class T>
__device__ __forceinline__ void load4(const T* p, int64_t i, int64_t n, bool vec, float out[4]) {
  if (vec) {
    Pack4<T> pk = *reinterpret_cast<const Pack4<T>*>(p + i);
#pragma unroll
    for (int j = 0; j < 4; ++j) out[j] = to_f32(pk.v[j]);
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) out[j] = (i + j < n) ? to_f32(p[i + j]) : 0.f;
  }
}

template <class T>
__device__ __forceinline__ void store4(T* p, int64_t i, int64_t n, bool vec, const float in[4]) {
  if (vec) {
    Pack4<T> pk;
#pragma unroll
    for (int j = 0; j < 4; ++j) pk.v[j] = from_f32<T>(in[j]);
    *reinterpret_cast<Pack4<T>*>(p + i) = pk;
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (i + j < n) p[i + j] = from_f32<T>(in[j]);
  }
}

// philox.h's dropout_draw with each 32 x 32 -> 64-bit product taken as __umulhi and a low
// multiply, which the compiler fuses into one IMAD.WIDE; the 64-bit product form of philox.h
// costs an extra add per multiply on sm_90. Same words, bit for bit (the CUDA tests compare the
// masks with the CPU's).
__device__ __forceinline__ Philox4 dropout_draw_fast(uint64_t key64, uint64_t ctr_lo64,
                                                     uint64_t ctr_hi64) {
  uint32_t c0 = uint32_t(ctr_lo64), c1 = uint32_t(ctr_lo64 >> 32);
  uint32_t c2 = uint32_t(ctr_hi64), c3 = uint32_t(ctr_hi64 >> 32);
  uint32_t k0 = uint32_t(key64), k1 = uint32_t(key64 >> 32);
#pragma unroll
  for (int r = 0; r < kDropoutPhiloxRounds; ++r) {
    const uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    const uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  Philox4 out;
  out.v[0] = c0;
  out.v[1] = c1;
  out.v[2] = c2;
  out.v[3] = c3;
  return out;
}

// ---------------------------------------------------------------- dropout
// Dropout factors (0 or 1/(1-p)) from the 16-bit lanes of philox.h: one Philox call per 8
// consecutive flat elements starting at a multiple of 8.
struct DropoutParams {
  DropoutKey key;
  uint32_t threshold = 0;  // lanes below it keep the element (dropout_keep_threshold)
  float scale = 1.f;       // 1 / (1 - p)
  bool active = false;
};

inline DropoutParams make_dropout(float p, DropoutKey key) {
  DropoutParams d;
  d.key = key;
  d.active = p > 0.f;
  d.threshold = dropout_keep_threshold(p);
  d.scale = d.active ? 1.f / (1.f - p) : 1.f;
  return d;
}

// The factors of lanes L..L+N-1 of one draw.
template <int L, int N>
__device__ __forceinline__ void dropout_lane_factors(const DropoutParams& d, const Philox4& r,
                                                     float* f) {
#pragma unroll
  for (int j = 0; j < N; ++j) f[j] = dropout_lane(r, L + j) < d.threshold ? d.scale : 0.f;
}

// Elements [i, i+4): one Philox call when i % 4 == 0 (lanes 0-3 or 4-7 of draw i / 8), else one
// per element (rows whose length is not a multiple of 4).
__device__ __forceinline__ void dropout_factors4(const DropoutParams& d, uint64_t i, float f[4]) {
  if (!d.active) {
#pragma unroll
    for (int j = 0; j < 4; ++j) f[j] = 1.f;
    return;
  }
  if ((i & 3) == 0) {
    const Philox4 r = dropout_draw_fast(d.key.seed, i >> 3, dropout_offset(d.key));
    if (i & 4)
      dropout_lane_factors<4, 4>(d, r, f);
    else
      dropout_lane_factors<0, 4>(d, r, f);
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) f[j] = dropout_keep(d.key, i + j, d.threshold) ? d.scale : 0.f;
  }
}

__device__ __forceinline__ float dropout_factor1(const DropoutParams& d, uint64_t i) {
  if (!d.active) return 1.f;
  return dropout_keep(d.key, i, d.threshold) ? d.scale : 0.f;
}

// Elements [i, i+8) for an active DropoutParams, with offset = dropout_offset(d.key) read once by
// the caller. i % 8 == 0: one Philox call; otherwise two, the keep bits of both draws shifted
// by i % 8 (same flags as dropout_keep element by element).
__device__ __forceinline__ void dropout_factors8(const DropoutParams& d, uint64_t offset,
                                                 uint64_t i, float f[8]) {
  const uint64_t g = i >> 3;
  const Philox4 a = dropout_draw_fast(d.key.seed, g, offset);
  const unsigned s = unsigned(i & 7);
  if (s == 0) {
    dropout_lane_factors<0, 8>(d, a, f);
    return;
  }
  const Philox4 b = dropout_draw_fast(d.key.seed, g + 1, offset);
  const uint32_t bits =
      (dropout_keep_bits8(a, d.threshold) | (dropout_keep_bits8(b, d.threshold) << 8)) >> s;
#pragma unroll
  for (int j = 0; j < 8; ++j) f[j] = (bits >> j) & 1u ? d.scale : 0.f;
}
// The i % 8 == 0 case only (flat kernels): one Philox call, no other path compiled.
__device__ __forceinline__ void dropout_factors8_aligned(const DropoutParams& d, uint64_t offset,
                                                         uint64_t i, float f[8]) {
  dropout_lane_factors<0, 8>(d, dropout_draw_fast(d.key.seed, i >> 3, offset), f);
}

// One element of residual + dropout(x + bias): f is the element's dropout factor (0 or
// 1 / (1 - p)). Every kernel that writes a block output (bias_dropout_residual, the fused
// residual add + LayerNorm) goes through this expression, so they write the same bits.
template <bool kBias, bool kDrop>
__device__ __forceinline__ float bias_dropout_residual_value(float x, float bias, float residual,
                                                             float f) {
  const float v = kBias ? x + bias : x;
  return kDrop ? residual + v * f : residual + v;
}

// ---------------------------------------------------------------- activations
// GELU is the tanh approximation (what cuBLASLt's GELU epilogue computes).
__device__ __forceinline__ float gelu_tanh(float x) {
  const float k = 0.7978845608028654f;  // sqrt(2/pi)
  float u = k * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.f + tanhf(u));
}
__device__ __forceinline__ float gelu_tanh_grad(float x) {
  const float k = 0.7978845608028654f;
  float u = k * (x + 0.044715f * x * x * x);
  float t = tanhf(u);
  return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * k * (1.f + 3.f * 0.044715f * x * x);
}
// act: 0 = ReLU, 1 = GELU (values of ls::Activation).
__device__ __forceinline__ float activate(int act, float x) {
  return act == 0 ? fmaxf(x, 0.f) : gelu_tanh(x);
}
__device__ __forceinline__ float activate_grad(int act, float x) {
  return act == 0 ? (x > 0.f ? 1.f : 0.f) : gelu_tanh_grad(x);
}

// ---------------------------------------------------------------- bandwidth-bound helpers
// 2^x by the hardware approximation (MUFU.EX2, ~2 ulp; denormal results flush to 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The same GELU as gelu_tanh / gelu_tanh_grad, written as x * sigmoid(2u) (0.5 (1 + tanh(u))
// = 1 / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3)): one ex2 and one approximate
// reciprocal instead of tanhf, and no cancellation for negative x. Agrees with the tanhf form
// to a few fp32 ulp of the result (relative error of exp(-2u) ~ |2u| 2^-24 + 2 ulp).
// gelu_exp(x) = exp(-2u), its argument clamped at 2^64 so that the gradient's E * s stays
// finite (beyond, the true values are below 1e-18).
__device__ __forceinline__ float gelu_exp(float x) {
  const float a = -2.f * 0.7978845608028654f * 1.4426950408889634f;  // -2 sqrt(2/pi) log2(e)
  return fast_exp2(fminf(x * fmaf(a * 0.044715f, x * x, a), 64.f));
}
__device__ __forceinline__ float gelu_fast(float x) {
  return __fdividef(x, 1.f + gelu_exp(x));
}
// d/dx x s(2u) = s + 2 x s (1 - s) u', with 1 - s = E s: s (1 + 2 k x E s (1 + 3 0.044715 x^2)).
__device__ __forceinline__ float gelu_fast_grad(float x) {
  const float k2 = 2.f * 0.7978845608028654f;
  float e = gelu_exp(x);
  float s = __fdividef(1.f, 1.f + e);
  return s * fmaf(k2 * x * e * s, fmaf(3.f * 0.044715f, x * x, 1.f), 1.f);
}

// Eight consecutive elements as 16-byte accesses (one for fp16/bf16, two for fp32): load_raw8,
// unpack8, store8. `vec`: the caller proved p is 16-byte aligned, i % 8 == 0 and i + 8 <= n;
// otherwise element by element, elements at or beyond n reading as 0 (loads) or left alone
// (stores).
template <class T>
struct alignas(16) Pack16 {
  static constexpr int kElems = 16 / int(sizeof(T));
  T v[kElems];
};
__host__ __device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}
// The same load kept as raw 32-bit words (8 fp16/bf16 elements in 4 registers, fp32 in 8),
// converted later with unpack8: lets a thread hold several loads in flight at little register
// cost. Words, not element arrays, so that selects and phis stay whole-register operations.
template <class T>
struct Raw8 {
  uint32_t w[2 * sizeof(T)];
};
__device__ __forceinline__ uint32_t elem_bits(float x) {
  return __float_as_uint(x);
}
__device__ __forceinline__ uint32_t elem_bits(__half x) {
  return __half_as_ushort(x);
}
__device__ __forceinline__ uint32_t elem_bits(__nv_bfloat16 x) {
  return __bfloat16_as_ushort(x);
}
// Element j (0..7) of a Raw8 as fp32.
__device__ __forceinline__ float raw8_get(const Raw8<float>& r, int j) {
  return __uint_as_float(r.w[j]);
}
__device__ __forceinline__ float raw8_get(const Raw8<__half>& r, int j) {
  const unsigned short b =
      (j & 1) ? (unsigned short)(r.w[j >> 1] >> 16) : (unsigned short)(r.w[j >> 1]);
  return __half2float(__ushort_as_half(b));
}
__device__ __forceinline__ float raw8_get(const Raw8<__nv_bfloat16>& r, int j) {
  // bf16 -> fp32 is the 16 bits placed high.
  return __uint_as_float((j & 1) ? (r.w[j >> 1] & 0xFFFF0000u) : (r.w[j >> 1] << 16));
}
// A Raw8 from 8 elements (the unaligned paths).
template <class T>
__device__ __forceinline__ Raw8<T> raw8_from(const T v[8]) {
  Raw8<T> r;
  if (sizeof(T) == 4) {
#pragma unroll
    for (int j = 0; j < 8; ++j) r.w[j] = elem_bits(v[j]);
  } else {
#pragma unroll
    for (int q = 0; q < 4; ++q) r.w[q] = elem_bits(v[2 * q]) | (elem_bits(v[2 * q + 1]) << 16);
  }
  return r;
}
// Elements [i, i+8) of p one by one, those at or beyond n replaced by fill.
template <class T>
__device__ __forceinline__ Raw8<T> raw8_gather(const T* p, int64_t i, int64_t n, T fill) {
  T v[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) v[j] = i + j < n ? p[i + j] : fill;
  return raw8_from(v);
}
template <class T>
__device__ __forceinline__ Raw8<T> load_raw8(const T* p, int64_t i, int64_t n, bool vec) {
  Raw8<T> r;
  if (vec) {
#pragma unroll
    for (int k = 0; k < int(sizeof(T)) / 2; ++k) {
      const uint4 u = *reinterpret_cast<const uint4*>(p + i + k * Pack16<T>::kElems);
      r.w[4 * k] = u.x;
      r.w[4 * k + 1] = u.y;
      r.w[4 * k + 2] = u.z;
      r.w[4 * k + 3] = u.w;
    }
  } else {
    r = raw8_gather(p, i, n, from_f32<T>(0.f));
  }
  return r;
}
template <class T>
__device__ __forceinline__ void unpack8(const Raw8<T>& r, float out[8]) {
#pragma unroll
  for (int j = 0; j < 8; ++j) out[j] = raw8_get(r, j);
}
template <class T>
__device__ __forceinline__ void store8(T* p, int64_t i, int64_t n, bool vec, const float in[8]) {
  constexpr int E = Pack16<T>::kElems;
  if (vec) {
#pragma unroll
    for (int k = 0; k < 8 / E; ++k) {
      Pack16<T> pk;
#pragma unroll
      for (int j = 0; j < E; ++j) pk.v[j] = from_f32<T>(in[k * E + j]);
      *reinterpret_cast<Pack16<T>*>(p + i + k * E) = pk;
    }
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (i + j < n) p[i + j] = from_f32<T>(in[j]);
  }
}

// Division by a divisor d in [1, 2^32) fixed at launch, for numerators below 2^32, without a
// divide instruction (Granlund & Montgomery): with l = ceil(log2 d) and
// m = floor(2^32 (2^l - d) / d) + 1, n / d = (umulhi(n, m) + n) >> l, the sum taken in 64 bits.
struct FastDivU32 {
  uint32_t d = 1, magic = 1, shift = 0;
  FastDivU32() = default;
  explicit FastDivU32(uint32_t divisor) : d(divisor == 0 ? 1u : divisor) {
    divisor = d;
    while ((uint64_t{1} << shift) < uint64_t(divisor)) ++shift;
    magic = uint32_t(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - divisor)) / divisor + 1);
  }
  __host__ __device__ __forceinline__ uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    uint32_t hi = __umulhi(n, magic);
#else
    uint32_t hi = uint32_t((uint64_t(n) * magic) >> 32);
#endif
    return uint32_t((uint64_t(hi) + n) >> shift);
  }
  __host__ __device__ __forceinline__ uint32_t mod(uint32_t n) const {
    return n - div(n) * d;
  }
};

// ---------------------------------------------------------------- reductions
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024). Every thread gets the result.
// `scratch` holds 33 floats of shared memory; the call synchronises the block.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < nwarps ? scratch[lane] : 0.f;
  return warp_sum(r);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < nwarps ? scratch[lane] : -INFINITY;
  return warp_max(r);
}

// ---------------------------------------------------------------- launch helpers
inline unsigned grid_for(int64_t work_items, int threads, int64_t cap = 65535LL * 16) {
  int64_t g = (work_items + threads - 1) / threads;
  if (g < 1) g = 1;
  if (g > cap) g = cap;
  return static_cast<unsigned>(g);
}

// An attribute of the current device, queried once per device (launchers call these on every
// step).
template <cudaDeviceAttr kAttr>
inline int device_attribute() {
  static int cached[64] = {0};
  int dev = 0;
  LS_CUDA_CALL(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) dev = 0;
  if (cached[dev] == 0) {
    int n = 0;
    LS_CUDA_CALL(cudaDeviceGetAttribute(&n, kAttr, dev));
    cached[dev] = n > 0 ? n : 1;
  }
  return cached[dev];
}

// Raises Kernel's dynamic shared-memory limit to `bytes` (needed above 48 KiB) once per device:
// the attribute belongs to the (kernel, device) pair.
template <auto Kernel>
inline void allow_dynamic_smem(size_t bytes) {
  static bool allowed[64] = {false};
  int dev = 0;
  LS_CUDA_CALL(cudaGetDevice(&dev));
  const bool cacheable = dev >= 0 && dev < 64;
  if (cacheable && allowed[dev]) return;
  LS_CUDA_CALL(
      cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  if (cacheable) allowed[dev] = true;
}

// Number of SMs of the current device (used to size grid-stride grids).
inline int device_sm_count() {
  return device_attribute<cudaDevAttrMultiProcessorCount>();
}

// ---------------------------------------------------------------- programmatic dependent launch
// Every kernel of this backend is launched by launch_kernel and starts with pdl_wait(). On
// sm_90+ launch_kernel sets programmatic stream serialization, so the next kernel of the stream
// may be scheduled while this one drains (its launch latency hidden behind the tail) and waits in
// pdl_wait() until the previous grid has completed and its writes are visible. pdl_wait() must be
// the first statement, before any memory access and before any early return: a grid whose
// blocks all returned without waiting would count as complete while the one before it still
// runs. Kernels not launched with the attribute (and devices below sm_90) see a no-op.
// LS_PDL=0 in the environment launches without the attribute (for A/B measurements).
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// ---------------------------------------------------------------- L2 prefetch
// The 128-byte line holding p into L2 (prefetch.global.L2: a hint, no register result, no wait).
// For a kernel whose blocks or warps load, compute and store in turn, naming the lines of the
// next work item early keeps DRAM busy while they compute; the later loads then hit L2. Not a
// rule: where the loads already keep DRAM busy the extra requests cost time (measured on the
// fused attention, which prefetched its next blocks' tiles, and on the dropout column sums:
// bench/RESULTS.md, seventeenth session).
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// The lines of [p, p + bytes) into L2, thread t of n taking lines t, t + n, ... Every address
// named lies in the span (the first line by p itself).
__device__ __forceinline__ void prefetch_span_l2(const void* p, int64_t bytes, int t, int n) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p), end = a + uintptr_t(bytes);
  for (uintptr_t l = (a & ~uintptr_t(127)) + uintptr_t(t) * 128; l < end; l += uintptr_t(n) * 128)
    prefetch_l2(reinterpret_cast<const void*>(l < a ? a : l));
}

// p[0..4) += v in global memory: one 16-byte atomic on sm_90 and later (p 16-byte aligned:
// pack_aligned<float>), four fp32 atomics below. Where many blocks add into the same addresses
// the number of atomics, not their bytes, bounds the adds.
__device__ __forceinline__ void atomic_add4(float* p, float4 v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float4*>(p), v);
#else
  atomicAdd(p, v.x);
  atomicAdd(p + 1, v.y);
  atomicAdd(p + 2, v.z);
  atomicAdd(p + 3, v.w);
#endif
}

inline bool pdl_enabled() {
  static const bool env_on = [] {
    const char* e = std::getenv("LS_PDL");
    return e == nullptr || std::string(e) != "0";
  }();
  return env_on && device_attribute<cudaDevAttrComputeCapabilityMajor>() >= 9;
}

// kernel<<<grid, block, smem, s>>>(args...) with programmatic stream serialization when
// pdl_enabled(); a launch error throws ls::Error naming `name` (and, with LS_DEBUG_CHECKS, so
// does an asynchronous error pending after it).
template <class... KArgs, class... Args>
inline void launch_kernel(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block,
                          size_t smem, cudaStream_t s, Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    LS_FAIL(LS_ERR_CUDA,
            name << ": kernel launch (cudaLaunchKernelEx): " << cudaGetErrorString(err));
  }
  LS_LAUNCH_DEBUG_SYNC(name);
}

// Calls f(T{}) with T the storage type of dt; F64 is not a CUDA working type.
template <class F>
void dispatch_dtype(DType dt, const char* name, F&& f) {
  switch (dt) {
    case DType::F32:
      f(float{});
      return;
    case DType::F16:
      f(__half{});
      return;
    case DType::BF16:
      f(__nv_bfloat16{});
      return;
    default:
      LS_FAIL(LS_ERR_UNSUPPORTED,
              name << ": dtype " << dtype_name(dt) << " is not supported by the CUDA backend");
  }
}

// Calls f(A{}, B{}) with A and B std::bool_constant of the two runtime flags: one kernel
// instantiation per combination (e.g. dropout on/off x bias present/absent).
template <class F>
void dispatch_flags(bool a, bool b, F&& f) {
  using On = std::true_type;
  using Off = std::false_type;
  if (a)
    b ? f(On{}, On{}) : f(On{}, Off{});
  else
    b ? f(Off{}, On{}) : f(Off{}, Off{});
}

inline void require_acc_f32(DType acc, const char* name) {
  LS_REQUIRE(acc == DType::F32, LS_ERR_UNSUPPORTED,
             name << ": accumulation type " << dtype_name(acc)
                  << " is not supported by the CUDA backend (fp32 only)");
}

}  // namespace cuda
}  // namespace ls
