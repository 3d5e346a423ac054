// Elementwise type conversion and accumulation kernels: cast (fp32/fp16/bf16 in any direction),
// add_inplace (y += x in one type), bias rows (c[r, :] += bias, after a GEMM whose fused bias
// epilogue was not available) and fp32 accumulation of a vector of any type (bias gradients
// that cuBLASLt wrote into a workspace slice, added into the fp32 gradient).
// Layout: grid-stride 1-D loops, 256 threads, 4 elements per thread per step (one packed
// access when aligned). Shapes: flat n elements; bias rows [rows, n] with leading dimension ldc.
#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <class S, class D>
__global__ void cast_kernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  bool aligned = pack_aligned<S>(src) && pack_aligned<D>(dst);
  for (int64_t i = 4 * (int64_t(blockIdx.x) * blockDim.x + threadIdx.x); i < n;
       i += 4 * int64_t(gridDim.x) * blockDim.x) {
    bool vec = aligned && i + 4 <= n;
    float v[4];
    load4(src, i, n, vec, v);
    store4(dst, i, n, vec, v);
  }
}

template <class T>
__global__ void add_inplace_kernel(T* y, const T* x, int64_t n) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  bool aligned = pack_aligned<T>(y) && pack_aligned<T>(x);
  for (int64_t i = 4 * (int64_t(blockIdx.x) * blockDim.x + threadIdx.x); i < n;
       i += 4 * int64_t(gridDim.x) * blockDim.x) {
    bool vec = aligned && i + 4 <= n;
    float a[4], b[4];
    load4(y, i, n, vec, a);
    load4(x, i, n, vec, b);
#pragma unroll
    for (int j = 0; j < 4; ++j) a[j] += b[j];
    store4(y, i, n, vec, a);
  }
}

template <class C, class B>
__global__ void add_bias_rows_kernel(C* c, int64_t ldc, const B* bias, int64_t rows, int64_t n) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  int64_t total = rows * n;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = i / n, col = i % n;
    C* p = c + r * ldc + col;
    *p = from_f32<C>(to_f32(*p) + to_f32(bias[col]));
  }
}

template <class S>
__global__ void accumulate_f32_kernel(float* dst, const S* src, int64_t n) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] += to_f32(src[i]);
}

}  // namespace

void launch_cast(const void* src, DType src_t, void* dst, DType dst_t, size_t n, cudaStream_t s) {
  if (n == 0) return;
  dispatch_dtype(src_t, "cast", [&](auto sv) {
    using S = decltype(sv);
    dispatch_dtype(dst_t, "cast", [&](auto dv) {
      using D = decltype(dv);
      launch_kernel("cast", cast_kernel<S, D>, grid_for((int64_t(n) + 3) / 4, kThreads), kThreads,
                    0, s, static_cast<const S*>(src), static_cast<D*>(dst), int64_t(n));
    });
  });
}

void launch_add_inplace(void* y, const void* x, DType t, size_t n, cudaStream_t s) {
  if (n == 0) return;
  dispatch_dtype(t, "add_inplace", [&](auto tv) {
    using T = decltype(tv);
    launch_kernel("add_inplace", add_inplace_kernel<T>, grid_for((int64_t(n) + 3) / 4, kThreads),
                  kThreads, 0, s, static_cast<T*>(y), static_cast<const T*>(x), int64_t(n));
  });
}

void launch_add_bias_rows(void* c, DType c_t, int64_t ldc, const void* bias, DType dt, int64_t rows,
                          int64_t n, cudaStream_t s) {
  if (rows * n == 0) return;
  dispatch_dtype(c_t, "gemm (bias)", [&](auto cv) {
    using C = decltype(cv);
    dispatch_dtype(dt, "gemm (bias)", [&](auto bv) {
      using B = decltype(bv);
      launch_kernel("gemm (bias)", add_bias_rows_kernel<C, B>, grid_for(rows * n, kThreads),
                    kThreads, 0, s, static_cast<C*>(c), ldc, static_cast<const B*>(bias), rows, n);
    });
  });
}

void launch_accumulate_f32(float* dst, const void* src, DType src_t, size_t n, cudaStream_t s) {
  if (n == 0) return;
  dispatch_dtype(src_t, "gemm (bias grad)", [&](auto sv) {
    using S = decltype(sv);
    launch_kernel("gemm (bias grad)", accumulate_f32_kernel<S>, grid_for(int64_t(n), kThreads),
                  kThreads, 0, s, dst, static_cast<const S*>(src), int64_t(n));
  });
}

}  // namespace cuda
}  // namespace ls
