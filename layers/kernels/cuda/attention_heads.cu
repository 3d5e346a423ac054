// Attention head layout changes: split_heads (with the projection bias added in the same pass)
// and merge_heads, its inverse.
//   split: in [B*L, n*H*D] (+ bias [n*H*D]) -> out [n, B, H, L, D]
//   merge: in [n, B, H, L, D] -> out [B*L, n*H*D]
// Layout: a grid-stride loop over the head-major tensor, 256 threads, 4 consecutive elements of
// one head row per thread when D % 4 == 0 (packed access), else one element per thread; both
// sides are read/written contiguously along D.
#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// Offset in [B*L, n*H*D] of head-major element o of [n, B, H, L, D].
__device__ __forceinline__ int64_t token_major_offset(int64_t o, int64_t n, int64_t batch,
                                                      int64_t len, int64_t heads, int64_t d_dim,
                                                      int64_t* col) {
  int64_t d = o % d_dim;
  int64_t r = o / d_dim;
  int64_t l = r % len;
  r /= len;
  int64_t h = r % heads;
  r /= heads;
  int64_t b = r % batch;
  int64_t i = r / batch;
  *col = (i * heads + h) * d_dim + d;
  return (b * len + l) * (n * heads * d_dim) + *col;
}

template <class T, int G, bool SPLIT>
__global__ void heads_kernel(const T* __restrict__ in, const T* __restrict__ bias,
                             T* __restrict__ out, int64_t n, int64_t batch, int64_t len,
                             int64_t heads, int64_t head_dim) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  int64_t total = n * batch * heads * len * head_dim;
  for (int64_t o = G * (int64_t(blockIdx.x) * blockDim.x + threadIdx.x); o < total;
       o += G * int64_t(gridDim.x) * blockDim.x) {
    int64_t col;
    int64_t t = token_major_offset(o, n, batch, len, heads, head_dim, &col);
    float v[4] = {0.f, 0.f, 0.f, 0.f};
    if (SPLIT) {
      if (G == 4) {
        load4(in, t, t + 4, true, v);
      } else {
        v[0] = to_f32(in[t]);
      }
      if (bias != nullptr) {
        float b[4];
        if (G == 4) {
          load4(bias, col, col + 4, true, b);
        } else {
          b[0] = to_f32(bias[col]);
        }
#pragma unroll
        for (int j = 0; j < G; ++j) v[j] += b[j];
      }
      if (G == 4) {
        store4(out, o, o + 4, true, v);
      } else {
        out[o] = from_f32<T>(v[0]);
      }
    } else {
      if (G == 4) {
        load4(in, o, o + 4, true, v);
        store4(out, t, t + 4, true, v);
      } else {
        out[t] = in[o];
      }
    }
  }
}

template <bool SPLIT>
void launch_heads(const void* in, const void* bias, void* out, int64_t n, int64_t batch,
                  int64_t len, int64_t heads, int64_t head_dim, DType dt, cudaStream_t s,
                  const char* name) {
  int64_t total = n * batch * heads * len * head_dim;
  if (total == 0) return;
  dispatch_dtype(dt, name, [&](auto tv) {
    using T = decltype(tv);
    bool vec = head_dim % 4 == 0 && pack_aligned<T>(in) && pack_aligned<T>(out) &&
               (bias == nullptr || pack_aligned<T>(bias));
    int64_t cap = int64_t(device_sm_count()) * 16;
    if (vec)
      launch_kernel(name, heads_kernel<T, 4, SPLIT>, grid_for(total / 4, kThreads, cap), kThreads,
                    0, s, static_cast<const T*>(in), static_cast<const T*>(bias),
                    static_cast<T*>(out), n, batch, len, heads, head_dim);
    else
      launch_kernel(name, heads_kernel<T, 1, SPLIT>, grid_for(total, kThreads, cap), kThreads, 0, s,
                    static_cast<const T*>(in), static_cast<const T*>(bias), static_cast<T*>(out), n,
                    batch, len, heads, head_dim);
  });
}

}  // namespace

void launch_split_heads(const void* in, const void* bias, void* out, int64_t n, int64_t batch,
                        int64_t len, int64_t heads, int64_t head_dim, DType dt, cudaStream_t s) {
  launch_heads<true>(in, bias, out, n, batch, len, heads, head_dim, dt, s, "split_heads");
}

void launch_merge_heads(const void* in, void* out, int64_t n, int64_t batch, int64_t len,
                        int64_t heads, int64_t head_dim, DType dt, cudaStream_t s) {
  launch_heads<false>(in, nullptr, out, n, batch, len, heads, head_dim, dt, s, "merge_heads");
}

}  // namespace cuda
}  // namespace ls
