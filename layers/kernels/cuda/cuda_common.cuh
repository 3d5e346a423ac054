// Internal helpers shared by the CUDA kernel files: error-check macros that turn CUDA and
// cuBLASLt failures into ls::Error naming the call, fp32/fp16/bf16 load/store helpers (all
// arithmetic is done in fp32), 4-element packs for vectorised access, warp/block reductions,
// dropout mask generation from Philox (4 elements per Philox call when the group starts at a
// flat index that is a multiple of 4, as philox.h lays out the words), and the dtype dispatch.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

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

// After a kernel launch: launch-configuration errors are always caught (cheap, no sync);
// LS_DEBUG_CHECKS builds additionally report any pending asynchronous error.
#define LS_LAUNCH_CHECK(name)                                                                  \
  do {                                                                                         \
    cudaError_t ls_launch_err_ = cudaPeekAtLastError();                                        \
    if (ls_launch_err_ != cudaSuccess) {                                                       \
      (void)cudaGetLastError();                                                                \
      LS_FAIL(LS_ERR_CUDA, name << ": kernel launch: " << cudaGetErrorString(ls_launch_err_)); \
    }                                                                                          \
    LS_LAUNCH_DEBUG_SYNC(name);                                                                \
  } while (0)

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

// ---------------------------------------------------------------- dropout
// Dropout factors (0 or 1/(1-p)) for flat elements [i, i+4). One Philox call when i % 4 == 0,
// else one per element (rows whose length is not a multiple of 4).
struct DropoutParams {
  DropoutKey key;
  uint32_t threshold = 0;
  float scale = 1.f;  // 1 / (1 - p)
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

__device__ __forceinline__ void dropout_factors4(const DropoutParams& d, uint64_t i, float f[4]) {
  if (!d.active) {
#pragma unroll
    for (int j = 0; j < 4; ++j) f[j] = 1.f;
    return;
  }
  if ((i & 3) == 0) {
    Philox4 r = philox4x32_10(d.key.seed, i >> 2, dropout_offset(d.key));
#pragma unroll
    for (int j = 0; j < 4; ++j) f[j] = r.v[j] < d.threshold ? d.scale : 0.f;
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) f[j] = dropout_keep(d.key, i + j, d.threshold) ? d.scale : 0.f;
  }
}

__device__ __forceinline__ float dropout_factor1(const DropoutParams& d, uint64_t i) {
  if (!d.active) return 1.f;
  return dropout_keep(d.key, i, d.threshold) ? d.scale : 0.f;
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

// Number of SMs of the current device (cached per device; used to size grid-stride grids).
inline int device_sm_count() {
  static int cached[64] = {0};
  int dev = 0;
  LS_CUDA_CALL(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) dev = 0;
  if (cached[dev] == 0) {
    int n = 0;
    LS_CUDA_CALL(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    cached[dev] = n > 0 ? n : 1;
  }
  return cached[dev];
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

inline void require_acc_f32(DType acc, const char* name) {
  LS_REQUIRE(acc == DType::F32, LS_ERR_UNSUPPORTED,
             name << ": accumulation type " << dtype_name(acc)
                  << " is not supported by the CUDA backend (fp32 only)");
}

}  // namespace cuda
}  // namespace ls
