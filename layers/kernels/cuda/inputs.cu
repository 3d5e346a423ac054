// Batch inputs and step counters on the device.
//   import_tokens: dst[i] = src[i] if 0 <= src[i] < vocab else padding_idx; counts the
//     out-of-range ids (block reduction, one atomicAdd per block that saw any) so that
//     token arrays already on the GPU are validated on their way into the model's buffers and a
//     bad id never reaches another kernel. 256 threads, grid-stride.
//   padding_mask: mask[i] = tokens[i] == padding_idx. 256 threads, grid-stride.
//   counter_add / scalar_accumulate: one thread (the dropout pass counter; the update's token
//     count accumulated across micro-batches).
// Shapes: src, dst, tokens, mask [n].
#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__global__ void import_tokens_kernel(const int32_t* __restrict__ src, int32_t* __restrict__ dst,
                                     int64_t n, int32_t vocab, int32_t padding_idx, uint32_t* bad) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  __shared__ float scratch[33];
  float count = 0.f;  // exact: a block sees far fewer than 2^24 ids
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int32_t t = src[i];
    const bool ok = t >= 0 && t < vocab;
    dst[i] = ok ? t : padding_idx;
    count += ok ? 0.f : 1.f;
  }
  count = block_sum(count, scratch);
  if (threadIdx.x == 0 && count > 0.f) atomicAdd(bad, static_cast<uint32_t>(count));
}

__global__ void padding_mask_kernel(const int32_t* __restrict__ tokens, uint8_t* __restrict__ mask,
                                    int64_t n, int32_t padding_idx) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    mask[i] = tokens[i] == padding_idx ? 1 : 0;
}

__global__ void counter_add_kernel(uint64_t* counter, uint64_t v) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  counter[0] += v;
}

__global__ void scalar_accumulate_kernel(float* sum, const float* x) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  sum[0] += x[0];
}

}  // namespace

void launch_import_tokens(const int32_t* src, int32_t* dst, int64_t n, int32_t vocab,
                          int32_t padding_idx, uint32_t* bad_count_dev, cudaStream_t s) {
  if (n == 0) return;
  launch_kernel("import_tokens", import_tokens_kernel,
                grid_for(n, kThreads, int64_t(device_sm_count()) * 4), kThreads, 0, s, src, dst, n,
                vocab, padding_idx, bad_count_dev);
}

void launch_padding_mask(const int32_t* tokens, uint8_t* mask, int64_t n, int32_t padding_idx,
                         cudaStream_t s) {
  if (n == 0) return;
  launch_kernel("padding_mask", padding_mask_kernel,
                grid_for(n, kThreads, int64_t(device_sm_count()) * 4), kThreads, 0, s, tokens, mask,
                n, padding_idx);
}

void launch_counter_add(uint64_t* counter, uint64_t v, cudaStream_t s) {
  launch_kernel("counter_add", counter_add_kernel, 1, 1, 0, s, counter, v);
}

void launch_scalar_accumulate(float* sum, const float* x, cudaStream_t s) {
  launch_kernel("scalar_accumulate", scalar_accumulate_kernel, 1, 1, 0, s, sum, x);
}

}  // namespace cuda
}  // namespace ls
