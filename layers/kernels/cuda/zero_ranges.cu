// Zeroes many element ranges of one buffer in one launch: the gradient buffer's ranges that
// accumulate (biases, LayerNorm parameters, embedding tables, alignment gaps) before a fresh
// training pass, while the weights that a GEMM overwrites are left alone.
// Layout: grid (X, ranges) of 256 threads; blockIdx.y picks the range (a launch per 65535
// ranges), the X blocks of that row stride over its 16-byte-aligned middle with 16-byte stores;
// block 0's first threads store the up to 3 leading and 3 trailing 4-byte words outside it.
// Shapes: count ranges of 4- or 8-byte elements (element offsets, so the ranges are 4-byte
// aligned when base is); X from the longest range, at most 512.
#include <algorithm>

#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocksPerRange = 512;

__global__ void zero_ranges_kernel(char* __restrict__ base, const uint64_t* __restrict__ ranges,
                                   int first_range, unsigned elem_bytes) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  const int r = first_range + static_cast<int>(blockIdx.y);
  const uint64_t b = ranges[2 * r], e = ranges[2 * r + 1];
  if (e <= b) return;
  // Byte offsets from the range's start p: [0, head) and [tail, bytes) hold at most 3 words
  // each, [head, tail) is 16-byte aligned. Every address derives from base (global memory).
  char* p = base + b * elem_bytes;
  const uint64_t bytes = (e - b) * elem_bytes;
  const uint64_t head =
      min(bytes, static_cast<uint64_t>((16 - (reinterpret_cast<uintptr_t>(p) & 15)) & 15));
  const uint64_t tail = head + (bytes - head) / 16 * 16;
  uint4* mid = reinterpret_cast<uint4*>(p + head);
  const int64_t n16 = static_cast<int64_t>((tail - head) / 16);
  const uint4 z = make_uint4(0, 0, 0, 0);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n16;
       i += int64_t(gridDim.x) * blockDim.x)
    mid[i] = z;
  if (blockIdx.x == 0 && threadIdx.x < 6) {
    const int t = static_cast<int>(threadIdx.x);
    const uint64_t w = t < 3 ? 4 * t : tail + 4 * (t - 3);
    if (w < (t < 3 ? head : bytes)) *reinterpret_cast<uint32_t*>(p + w) = 0u;
  }
}

}  // namespace

void launch_zero_ranges(void* base, const uint64_t* ranges, int64_t count, uint64_t max_elements,
                        size_t elem_bytes, cudaStream_t s) {
  if (count <= 0) return;
  const int64_t max_16 = static_cast<int64_t>(max_elements * elem_bytes / 16) + 1;
  const int64_t x = std::min<int64_t>(
      std::max<int64_t>((max_16 + 4 * kThreads - 1) / (4 * kThreads), 1), kMaxBlocksPerRange);
  for (int64_t first = 0; first < count; first += 65535) {
    const unsigned rows = static_cast<unsigned>(std::min<int64_t>(count - first, 65535));
    launch_kernel("zero_ranges", zero_ranges_kernel, dim3(static_cast<unsigned>(x), rows), kThreads,
                  0, s, static_cast<char*>(base), ranges, static_cast<int>(first),
                  static_cast<unsigned>(elem_bytes));
  }
}

}  // namespace cuda
}  // namespace ls
