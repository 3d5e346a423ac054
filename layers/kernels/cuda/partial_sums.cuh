// Deterministic column sums finished inside the kernel that produced the partials, so that a
// deterministic reduction costs no second launch (reduce.cu's sum_partials takes ~4 us per
// call, nearly all of it launch and ramp).
// Used by the LayerNorm backward (2 arrays, 512 groups at 8192 x 1024): its two calls per
// encoder layer went from 0.074 to 0.067 ms (H200, same machine). Measured and not used for the
// bias/activation column sums and the attention bias: 1-3 us slower per call than a separate
// sum_partials launch there (each block's end waits for its fence and ticket, which costs most
// in grids of several waves, such as the attention backward's 2048 blocks).
//
// Every block of the grid stores its share of the partial rows, then takes a ticket. The last
// R blocks to arrive are the reducers: each waits until every block has arrived and then adds
// the rows of a fixed slice of the columns in a fixed order, so the result depends neither on
// which block becomes reducer r nor on the arrival order (bitwise reproducible for a given grid).
// Forward progress: R <= max(1, blocks / 2), and a reducer only starts waiting once
// blocks - R >= R blocks have exited, so the at most R - 1 blocks it waits for always find free
// SM slots (all grids that use this are sized to be resident at once anyway).
// Layout: rows[a][g][c] for arrays a < arrays, groups g < groups, columns c < cols;
// out[a][c] += sum over g of rows[a][g][c]. sync: two uint32 counters, zero before the launch,
// zeroed again by the last reducer (CudaOps owns one pair per stream).
// Reducer thread layout: 8 consecutive columns (one 32-byte sector per group row) x
// (threads / 8) group lanes; lane l sums groups l, l + lanes, ... in order (16 loads in
// flight), then thread l == 0 of each column adds the lanes in order (shared memory, `threads`
// floats given by the caller, unused by the kernel at that point).
#pragma once

#include <cstdint>

#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {

// Reducers for a grid of `blocks` blocks and `total_cols` = arrays x cols columns: one per 8
// columns, at most half the grid.
__device__ inline int64_t partial_sum_reducers(int64_t blocks, int64_t total_cols) {
  int64_t r = (total_cols + 7) / 8;
  if (r > blocks / 2) r = blocks / 2;
  return r < 1 ? 1 : r;
}

// Called once by every thread of every block, after the block stored its partial rows; no
// thread may have returned early. smem: at least blockDim-sized float scratch in shared memory.
__device__ inline void finish_partial_sums(const PartialSums& p, float* smem) {
  const unsigned nthreads = blockDim.x * blockDim.y * blockDim.z;
  const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned blocks = gridDim.x * gridDim.y * gridDim.z;
  __shared__ unsigned ticket;
  // The block's partial stores, then one thread's fence and ticket (the pattern of cooperative
  // groups' grid sync: the barrier orders the other threads' stores before thread 0's fence).
  __syncthreads();
  if (tid == 0) {
    __threadfence();
    ticket = atomicAdd(p.sync, 1u);
  }
  __syncthreads();
  const int64_t total = int64_t(p.arrays) * p.cols;
  const unsigned reducers = unsigned(partial_sum_reducers(blocks, total));
  if (ticket < blocks - reducers) return;
  const unsigned r = ticket - (blocks - reducers);
  if (tid == 0) {
    while (*static_cast<volatile unsigned*>(p.sync) < blocks) __nanosleep(64);
    __threadfence();
  }
  __syncthreads();

  constexpr int kWidth = 8, kBatch = 16;
  const unsigned lanes = nthreads / kWidth;
  const unsigned w = tid % kWidth, lane = tid / kWidth;
  const int64_t begin = total * r / reducers, end = total * (r + 1) / reducers;
  for (int64_t c0 = begin; c0 < end; c0 += kWidth) {
    const int64_t t = c0 + w;  // flat column a * cols + c
    float s = 0.f;
    if (t < end && lane < lanes) {
      const int64_t a = t / p.cols, c = t % p.cols;
      const float* col = p.rows + a * p.groups * p.cols + c;
      int64_t g = lane;
      for (; g + (kBatch - 1) * int64_t(lanes) < p.groups; g += kBatch * int64_t(lanes)) {
        float v[kBatch];
#pragma unroll
        for (int k = 0; k < kBatch; ++k) v[k] = __ldcg(col + (g + k * int64_t(lanes)) * p.cols);
#pragma unroll
        for (int k = 0; k < kBatch; ++k) s += v[k];
      }
      for (; g < p.groups; g += lanes) s += __ldcg(col + g * p.cols);
    }
    if (lane < lanes) smem[lane * kWidth + w] = s;
    __syncthreads();
    if (lane == 0 && t < end) {
      float sum = 0.f;
      for (unsigned l = 0; l < lanes; ++l) sum += smem[l * kWidth + w];
      const int64_t a = t / p.cols, c = t % p.cols;
      float* out = a == 0 ? p.out[0] : p.out[1];  // no dynamic index: no local-memory copy
      out[c] += sum;
    }
    __syncthreads();
  }
  if (tid == 0 && atomicAdd(p.sync + 1, 1u) == reducers - 1) {
    p.sync[0] = 0;  // every reducer is past its wait: ready for the next launch
    p.sync[1] = 0;
  }
}

}  // namespace cuda
}  // namespace ls
