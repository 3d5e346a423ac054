// Attention head layout changes: split_heads (with the projection bias added in the same pass)
// and merge_heads, its inverse.
//   split: in [B*L, n*H*D] (+ bias [n*H*D]) -> out [n, B, H, L, D]
//   merge: in [n, B, H, L, D] -> out [B*L, n*H*D]
// Thread layout: one warp per token row (b, l) of the token-major side, rows warp-strided over
// the grid (blocks of 256 threads, 8 blocks per SM); lane j takes the E-element chunks j, j+32,
// ... of the row's n*H*D columns, four chunks loaded before any is stored. E = 8 (16-byte
// accesses for fp16/bf16, two for fp32) when D % 8 == 0 and the pointers are 16-byte aligned,
// else 1. A chunk lies in one head row, so both sides are accessed in whole runs of D elements.
// Index arithmetic: 32-bit divisions by L, H*D and D through FastDivU32, once per row / chunk.
#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32, kUnroll = 4;

struct HeadsShape {
  int64_t batch, heads;
  uint32_t rows, cols;             // B*L and n*H*D
  FastDivU32 by_len, by_hd, by_d;  // L, H*D, D (their .d: the sizes themselves)
};

// Offset in [n, B, H, L, D] of token-major element (row, col), row = b * L + l.
__device__ __forceinline__ int64_t head_major_offset(const HeadsShape& s, uint32_t b, uint32_t l,
                                                     uint32_t col) {
  const uint32_t i = s.by_hd.div(col), rem = col - i * s.by_hd.d;
  const uint32_t h = s.by_d.div(rem), d = rem - h * s.by_d.d;
  return (((int64_t(i) * s.batch + b) * s.heads + h) * s.by_len.d + l) * s.by_d.d + d;
}

template <class T, int E, bool SPLIT>
__global__ void __launch_bounds__(kThreads)
    heads_kernel(const T* __restrict__ in, const T* __restrict__ bias, T* __restrict__ out,
                 HeadsShape s) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  const uint32_t lane = threadIdx.x % 32;
  const uint32_t chunks = s.cols / E;
  for (uint32_t row = blockIdx.x * kWarps + threadIdx.x / 32; row < s.rows;
       row += gridDim.x * kWarps) {
    const uint32_t b = s.by_len.div(row), l = row - b * s.by_len.d;
    const int64_t row_off = int64_t(row) * s.cols;
    for (uint32_t c0 = lane; c0 < chunks; c0 += 32 * kUnroll) {
      int64_t src[kUnroll], dst[kUnroll];
      uint32_t col[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        col[u] = (c0 + 32 * u) * E;
        const int64_t head = head_major_offset(s, b, l, col[u]);
        src[u] = SPLIT ? row_off + col[u] : head;
        dst[u] = SPLIT ? head : row_off + col[u];
      }
      if constexpr (E == 8) {
        Raw8<T> v[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
          if (c0 + 32 * u < chunks) v[u] = load_raw8(in, src[u], 0, true);
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          if (c0 + 32 * u >= chunks) break;
          float f[8];
          unpack8(v[u], f);
          if (SPLIT && bias != nullptr) {
            float bb[8];
            unpack8(load_raw8(bias, col[u], 0, true), bb);
#pragma unroll
            for (int j = 0; j < 8; ++j) f[j] += bb[j];
          }
          store8(out, dst[u], 0, true, f);
        }
      } else {
        T v[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
          if (c0 + 32 * u < chunks) v[u] = in[src[u]];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          if (c0 + 32 * u >= chunks) break;
          if (SPLIT && bias != nullptr)
            out[dst[u]] = from_f32<T>(to_f32(v[u]) + to_f32(bias[col[u]]));
          else
            out[dst[u]] = v[u];
        }
      }
    }
  }
}

template <bool SPLIT>
void launch_heads(const void* in, const void* bias, void* out, int64_t n, int64_t batch,
                  int64_t len, int64_t heads, int64_t head_dim, DType dt, cudaStream_t s,
                  const char* name) {
  const int64_t rows = batch * len, cols = n * heads * head_dim;
  if (rows == 0 || cols == 0) return;
  LS_REQUIRE(rows < (int64_t{1} << 31) && cols < (int64_t{1} << 31) &&
                 heads * head_dim < (int64_t{1} << 31),
             LS_ERR_INVALID_ARGUMENT,
             name << ": " << rows << " token rows of " << cols
                  << " columns exceed the kernel's 32-bit index range");
  HeadsShape shape{batch,
                   heads,
                   uint32_t(rows),
                   uint32_t(cols),
                   FastDivU32(uint32_t(len)),
                   FastDivU32(uint32_t(heads * head_dim)),
                   FastDivU32(uint32_t(head_dim))};
  const unsigned grid = grid_for(rows, kWarps, int64_t(device_sm_count()) * (2048 / kThreads));
  dispatch_dtype(dt, name, [&](auto tv) {
    using T = decltype(tv);
    const bool vec = head_dim % 8 == 0 && aligned16(in) && aligned16(out) &&
                     (bias == nullptr || aligned16(bias));
    if (vec)
      launch_kernel(name, heads_kernel<T, 8, SPLIT>, grid, kThreads, 0, s,
                    static_cast<const T*>(in), static_cast<const T*>(bias), static_cast<T*>(out),
                    shape);
    else
      launch_kernel(name, heads_kernel<T, 1, SPLIT>, grid, kThreads, 0, s,
                    static_cast<const T*>(in), static_cast<const T*>(bias), static_cast<T*>(out),
                    shape);
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
