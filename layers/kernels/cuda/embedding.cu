// Token + position embedding, fused with the scale and the dropout.
// Shapes: tokens [B, L] (int32), table [V, C] (dt), learned positions [P, C] (dt),
//   out / d_out [B*L, C] (dt), d_table [V, C] and d_positions [P, C] (fp32).
// Forward: one block of 128 threads per token row t = b*L + l. The block first counts the
//   non-padding tokens of row b up to l (__syncthreads_count over chunks of the token row) to
//   get fairseq's position padding_idx + j, then writes
//   out[t, c] = dropout(scale * table[tok, c] + pos[c]), 8 columns per thread per step with
//   16-byte accesses and one Philox call when C % 8 == 0 and the rows are 16-byte aligned,
//   else 4 (one Philox call per 4 columns). The sinusoid is evaluated in double, as the
//   CPU reference does, so both agree to fp32 rounding. When the caller gives scratch for
//   [L, C] floats, sinusoid_rows_kernel (one thread per element, grid-stride) first writes the
//   rows of positions padding_idx + 1 .. padding_idx + L (every position a row of length L can
//   hold) and the forward reads them: L x C evaluations per call instead of B x L x C (at
//   128 x 64 x 1024, 65K instead of 8.4M double sin/cos: the per-element form took ~75 us per
//   call on an H200, almost all of it fp64 work). Same function, same fp32 values, same bits.
// Backward, two paths:
//   - default (deterministic == false): one block per token row, atomicAdd of
//     scale * dropout_bwd(d_out) into d_table[tok] (and of dropout_bwd(d_out) into
//     d_positions[pos]), 4 columns per atomic_add4 (one 16-byte atomic on sm_90) when
//     C % 4 == 0;
//     repeated tokens make the fp32 summation order nondeterministic.
//   - deterministic: no atomics; every d_table / d_positions element is updated by exactly one
//     thread, in token order, so the result is bitwise reproducible.
//     Table rows: grid (ceil(C/512), buckets) blocks of 128 threads; block (x, y) owns columns
//     [512x, 512x + 512) (4 per thread) of the table rows with token % buckets == y. It walks
//     the token list in chunks of 1024 (8 coalesced loads per thread, all in flight), compacts
//     the positions of its own tokens in order (warp ballots + a prefix over the 4 warps, in
//     shared memory), then every thread adds those rows' gradients to its columns in that
//     order. Cost: one pass over the token ids per block plus one read-modify-write per owned
//     (token, column) pair.
//     Learned position rows (when d_positions is given): each thread owns one column and one
//     bucket of position rows and scans the token list in order (grid (ceil(C/128), buckets)).
// Dropout masks are regenerated from the key and the flat index t*C + c (never stored).
#include <algorithm>

#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

constexpr int kThreads = 128;

__device__ __forceinline__ float sinusoid(int64_t pos, int64_t c, int64_t dim) {
  int64_t half = dim / 2;
  if (c >= 2 * half) return 0.f;
  int64_t i = c < half ? c : c - half;
  double freq = exp(-double(i) * log(10000.0) / double(half - 1));
  double angle = double(pos) * freq;
  return float(c < half ? sin(angle) : cos(angle));
}

// Position of token row t (-1 for padding), computed by the whole block.
__device__ int64_t block_position(const int32_t* tokens, int64_t t, int64_t len,
                                  int32_t padding_idx) {
  int64_t b = t / len, l = t % len;
  const int32_t* row = tokens + b * len;
  int64_t count = 0;
  for (int64_t base = 0; base <= l; base += blockDim.x) {
    int64_t j = base + threadIdx.x;
    int pred = (j <= l && row[j] != padding_idx) ? 1 : 0;
    count += __syncthreads_count(pred);
  }
  return tokens[t] == padding_idx ? -1 : int64_t(padding_idx) + count;
}

// rows[j * dim + c] = sinusoid(first_pos + j, c, dim) for j < len.
__global__ void sinusoid_rows_kernel(float* __restrict__ rows, int64_t first_pos, int64_t len,
                                     int64_t dim) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  const int64_t n = len * dim, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    rows[i] = sinusoid(first_pos + i / dim, i % dim, dim);
}

// sin_rows: null, or sinusoid_rows_kernel's rows (position padding_idx + 1 + j in row j).
template <class T>
__global__ void embedding_forward_kernel(EmbeddingArgs a, const T* __restrict__ table,
                                         const T* __restrict__ learned,
                                         const float* __restrict__ sin_rows, T* __restrict__ out,
                                         DropoutParams d) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  int64_t t = blockIdx.x;
  int64_t pos = block_position(a.tokens, t, a.len, a.padding_idx);
  int64_t tok = a.tokens[t];
  int64_t dim = a.dim;
  const T* trow = table + tok * dim;
  const T* prow = (learned != nullptr && pos >= 0) ? learned + pos * dim : nullptr;
  const float* srow = (sin_rows != nullptr && pos >= 0) ? sin_rows + (pos - a.padding_idx - 1) * dim
                                                        : nullptr;  // read only when prow is null
  T* orow = out + t * dim;
  if (dim % 8 == 0 && aligned16(table) && aligned16(out) &&
      (learned == nullptr || aligned16(learned)) && (sin_rows == nullptr || aligned16(sin_rows))) {
    // 8 columns per thread per step: 16-byte loads and stores of every row, one Philox call.
    const uint64_t offset = d.active ? dropout_offset(d.key) : 0;
    for (int64_t c = 8 * int64_t(threadIdx.x); c < dim; c += 8 * int64_t(blockDim.x)) {
      float v[8], p[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, f[8];
      unpack8(load_raw8(trow, c, dim, true), v);
      if (prow != nullptr) {
        unpack8(load_raw8(prow, c, dim, true), p);
      } else if (srow != nullptr) {
        unpack8(load_raw8(srow, c, dim, true), p);
      } else if (pos >= 0) {
#pragma unroll
        for (int j = 0; j < 8; ++j) p[j] = sinusoid(pos, c + j, dim);
      }
      if (d.active) {
        dropout_factors8_aligned(d, offset, uint64_t(t * dim + c), f);
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) f[j] = 1.f;
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = (a.scale * v[j] + p[j]) * f[j];
      store8(orow, c, dim, true, v);
    }
    return;
  }
  // Otherwise 4 columns per thread per step (packed when aligned), bounds-checked at the end.
  bool aligned = dim % 4 == 0 && pack_aligned<T>(table) && pack_aligned<T>(out) &&
                 (learned == nullptr || pack_aligned<T>(learned)) &&
                 (sin_rows == nullptr || pack_aligned<float>(sin_rows));
  for (int64_t c = 4 * int64_t(threadIdx.x); c < dim; c += 4 * int64_t(blockDim.x)) {
    bool vec = aligned && c + 4 <= dim;
    float v[4], p[4] = {0.f, 0.f, 0.f, 0.f}, f[4];
    load4(trow, c, dim, vec, v);
    if (prow != nullptr) {
      load4(prow, c, dim, vec, p);
    } else if (srow != nullptr) {
      load4(srow, c, dim, vec, p);
    } else if (pos >= 0) {
#pragma unroll
      for (int j = 0; j < 4; ++j) p[j] = c + j < dim ? sinusoid(pos, c + j, dim) : 0.f;
    }
    dropout_factors4(d, uint64_t(t * dim + c), f);
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = (a.scale * v[j] + p[j]) * f[j];
    store4(orow, c, dim, vec, v);
  }
}

template <class T>
__global__ void embedding_backward_atomic_kernel(EmbeddingArgs a, const T* __restrict__ d_out,
                                                 float* d_table, float* d_positions,
                                                 DropoutParams d) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  int64_t t = blockIdx.x;
  int64_t pos = block_position(a.tokens, t, a.len, a.padding_idx);
  if (pos < 0) return;  // padding: no gradient
  int64_t tok = a.tokens[t];
  int64_t dim = a.dim;
  bool aligned = dim % 4 == 0 && pack_aligned<T>(d_out);
  // Whole rows of 4-column packs: one atomic_add4 per pack (one 16-byte atomic on sm_90).
  const bool atomic4 =
      dim % 4 == 0 && pack_aligned<float>(d_table) && pack_aligned<float>(d_positions);
  for (int64_t c = 4 * int64_t(threadIdx.x); c < dim; c += 4 * int64_t(blockDim.x)) {
    bool vec = aligned && c + 4 <= dim;
    float g[4], f[4];
    load4(d_out + t * dim, c, dim, vec, g);
    dropout_factors4(d, uint64_t(t * dim + c), f);
    if (atomic4) {  // c + 4 <= dim here
      const float4 gf = make_float4(g[0] * f[0], g[1] * f[1], g[2] * f[2], g[3] * f[3]);
      if (d_table != nullptr)
        atomic_add4(d_table + tok * dim + c,
                    make_float4(a.scale * gf.x, a.scale * gf.y, a.scale * gf.z, a.scale * gf.w));
      if (d_positions != nullptr) atomic_add4(d_positions + pos * dim + c, gf);
      continue;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (c + j >= dim) break;
      float gj = g[j] * f[j];
      if (d_table != nullptr) atomicAdd(d_table + tok * dim + c + j, a.scale * gj);
      if (d_positions != nullptr) atomicAdd(d_positions + pos * dim + c + j, gj);
    }
  }
}

template <class T>
__global__ void embedding_backward_deterministic_kernel(EmbeddingArgs a,
                                                        const T* __restrict__ d_out, float* d_table,
                                                        float* d_positions, DropoutParams d) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= a.dim) return;
  int64_t bucket = blockIdx.y, buckets = gridDim.y, dim = a.dim;
  for (int64_t b = 0; b < a.batch; ++b) {
    int64_t pos = a.padding_idx;
    for (int64_t l = 0; l < a.len; ++l) {
      int64_t t = b * a.len + l;
      int64_t tok = a.tokens[t];
      if (tok == a.padding_idx) continue;
      ++pos;
      bool mine_tok = d_table != nullptr && tok % buckets == bucket;
      bool mine_pos = d_positions != nullptr && pos % buckets == bucket;
      if (!mine_tok && !mine_pos) continue;
      uint64_t i = uint64_t(t * dim + c);
      float g = to_f32(d_out[i]) * dropout_factor1(d, i);
      if (mine_tok) d_table[tok * dim + c] += a.scale * g;
      if (mine_pos) d_positions[pos * dim + c] += g;
    }
  }
}

// Table rows of the deterministic backward (see the file comment).
constexpr int kChunkPerThread = 8;
constexpr int kChunk = kThreads * kChunkPerThread;  // token positions per pass

template <class T>
__global__ void embedding_backward_table_kernel(EmbeddingArgs a, const T* __restrict__ d_out,
                                                float* d_table, DropoutParams d) {
  pdl_wait();                          // the previous kernel of the stream is done (launch_kernel)
  __shared__ int32_t entries[kChunk];  // this chunk's own token positions, in order
  __shared__ int warp_counts[kChunkPerThread][kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t c = (int64_t(blockIdx.x) * kThreads + threadIdx.x) * 4;
  const int64_t bucket = blockIdx.y, buckets = gridDim.y, dim = a.dim, rows = a.batch * a.len;
  const bool aligned = dim % 4 == 0 && pack_aligned<T>(d_out);
  const uint64_t offset = d.active ? dropout_offset(d.key) : 0;
  DropoutParams dd = d;
  dd.key.offset = offset;  // resolved once: the pass counter is read here, not per element
  dd.key.stream = nullptr;
  for (int64_t base = 0; base < rows; base += kChunk) {
    int32_t tok[kChunkPerThread];
#pragma unroll
    for (int u = 0; u < kChunkPerThread; ++u) {
      const int64_t t = base + u * kThreads + threadIdx.x;
      tok[u] = t < rows ? __ldg(a.tokens + t) : a.padding_idx;
    }
    unsigned ballots[kChunkPerThread];
#pragma unroll
    for (int u = 0; u < kChunkPerThread; ++u) {
      const bool mine = tok[u] != a.padding_idx && int64_t(tok[u]) % buckets == bucket;
      ballots[u] = __ballot_sync(0xffffffffu, mine);
      if (lane == 0) warp_counts[u][warp] = __popc(ballots[u]);
    }
    __syncthreads();
    // Entry order = token order: sub-chunk u, then warp, then lane.
    int before_u = 0;
#pragma unroll
    for (int u = 0; u < kChunkPerThread; ++u) {
      int before = before_u;
      for (int w = 0; w < kThreads / 32; ++w) {
        if (w < warp) before += warp_counts[u][w];
        before_u += warp_counts[u][w];
      }
      if ((ballots[u] >> lane) & 1u)
        entries[before + __popc(ballots[u] & ((1u << lane) - 1u))] =
            int32_t(base + u * kThreads + threadIdx.x);
    }
    const int total = before_u;
    __syncthreads();
    if (c < dim) {
      const bool vec = aligned && c + 4 <= dim;
      for (int e = 0; e < total; ++e) {
        const int64_t t = entries[e];
        const int64_t row = __ldg(a.tokens + t);
        float g[4], f[4];
        load4(d_out + t * dim, c, dim, vec, g);
        dropout_factors4(dd, uint64_t(t * dim + c), f);
        float* out = d_table + row * dim + c;
#pragma unroll
        for (int j = 0; j < 4; ++j)
          if (c + j < dim) out[j] += a.scale * g[j] * f[j];
      }
    }
    __syncthreads();  // entries and warp_counts are rewritten by the next chunk
  }
}

}  // namespace

void launch_embedding_forward(const EmbeddingArgs& a, const void* table, void* out, float* scratch,
                              size_t scratch_bytes, cudaStream_t s) {
  int64_t rows = a.batch * a.len;
  if (rows == 0) return;
  DropoutParams d = make_dropout(a.dropout, a.key);
  const float* sin_rows = nullptr;
  const int64_t sin_elems = a.len * a.dim;
  if (a.learned_positions == nullptr && scratch != nullptr &&
      size_t(sin_elems) <= scratch_bytes / sizeof(float)) {
    const int64_t blocks = std::min<int64_t>((sin_elems + 255) / 256, 1024);
    launch_kernel("sinusoid_rows", sinusoid_rows_kernel, unsigned(blocks), 256, 0, s, scratch,
                  int64_t(a.padding_idx) + 1, a.len, a.dim);
    sin_rows = scratch;
  }
  dispatch_dtype(a.dt, "embedding_forward", [&](auto tv) {
    using T = decltype(tv);
    launch_kernel("embedding_forward", embedding_forward_kernel<T>, unsigned(rows), kThreads, 0, s,
                  a, static_cast<const T*>(table), static_cast<const T*>(a.learned_positions),
                  sin_rows, static_cast<T*>(out), d);
  });
}

void launch_embedding_backward(const EmbeddingArgs& a, const void* d_out, float* d_table,
                               float* d_positions, bool deterministic, cudaStream_t s) {
  int64_t rows = a.batch * a.len;
  if (rows == 0 || (d_table == nullptr && d_positions == nullptr)) return;
  DropoutParams d = make_dropout(a.dropout, a.key);
  dispatch_dtype(a.dt, "embedding_backward", [&](auto tv) {
    using T = decltype(tv);
    if (deterministic) {
      LS_CHECK_ARG(rows <= INT32_MAX, "embedding_backward: more than 2^31 token positions");
      if (d_table != nullptr) {
        // About 16 blocks per SM; more buckets mean fewer rows (read-modify-writes) per block.
        const unsigned gx = unsigned((a.dim + 4 * kThreads - 1) / (4 * kThreads));
        int64_t buckets = int64_t(device_sm_count()) * 16 / gx;
        buckets = std::max<int64_t>(1, std::min<int64_t>(buckets, 65535));
        launch_kernel("embedding_backward (table)", embedding_backward_table_kernel<T>,
                      dim3(gx, unsigned(buckets)), kThreads, 0, s, a, static_cast<const T*>(d_out),
                      d_table, d);
      }
      if (d_positions != nullptr) {
        const unsigned gx = unsigned((a.dim + kThreads - 1) / kThreads);
        int64_t buckets = int64_t(device_sm_count()) * 16 / gx;
        buckets = std::max<int64_t>(1, std::min<int64_t>(buckets, 1024));
        launch_kernel("embedding_backward", embedding_backward_deterministic_kernel<T>,
                      dim3(gx, unsigned(buckets)), kThreads, 0, s, a, static_cast<const T*>(d_out),
                      nullptr, d_positions, d);
      }
    } else {
      launch_kernel("embedding_backward", embedding_backward_atomic_kernel<T>, unsigned(rows),
                    kThreads, 0, s, a, static_cast<const T*>(d_out), d_table, d_positions, d);
    }
  });
}

}  // namespace cuda
}  // namespace ls
