// Fused (flash-style) attention on tensor cores, fp16/bf16 (mma.sync m16n8k16, fp32
// accumulation; sm_80+). Semantics: ops.h AttentionArgs. It fuses Q K^T, the scale, the padding
// and causal masks, the softmax, the attention dropout (Philox, the unfused path's element
// index ((b*H + h)*Lq + i)*Lk + j) and P V, reading Q, K, V straight from the token-major
// projections and writing the context token-major: no [Lq, Lk] tensor, no head split/merge.
//
// Tiles: 64 queries x 64 keys, head_dim padded to DP = 32 or 64 (columns >= head_dim are zero
// in shared memory and never written). Blocks of 128 threads = 4 warps (256 in the one-tile
// backward); 16-byte global loads into shared rows padded by 8 elements (conflict-free
// ldmatrix fragment loads). Dropout bits
// of a 64 x 64 tile are drawn once into shared memory by all threads of the block (128 threads:
// row t/2, 32 columns; 256: row t/4, 16 columns), one Philox call per 8 consecutive flat indices.
//   forward:  grid (ceil(Lq/64), H, B). Warp w owns queries w*16..w*16+15 (Q fragments in
//             registers) and walks the key tiles (causal: only those a query of the block can
//             see) with an online softmax in base 2 (row max / sum over the quad's lanes);
//             P (dropped, without the 1 / (1 - p), which the final normalisation applies)
//             goes from the S accumulators straight into the A operand of P V. The first key
//             tile's dropout bits and padding flags are drawn while its loads are in flight.
//             Writes ctx and lse = ln(sum_j exp(s_ij)) (-inf for a row with no visible key).
//   backward, one key tile (Lk <= 64, the common case of short rows): grid (1, H, B), 256
//             threads; the block owns every key and walks the query tiles in two phases through
//             shared memory (see the kernel): S^T, dP^T -> dropped P^T and dS^T tiles, then
//             dV += P^T dO, dK += dS^T Q and dQ = dS K split over 8 warps. It computes delta
//             from its own loads (the dropout bits drawn while they are in flight) and the
//             projections' bias gradient (column sums of dq, dk, dv: a reduce-scatter butterfly
//             over each warp's rows, then the row groups in order; per-block partials in
//             deterministic mode).
//             With one query tile as well (Lq <= 64) there is no loop and dV, dK, dQ are
//             computed one after another (16 accumulators live instead of 48).
//   Outputs (ctx, dq, dk, dv) leave through each warp's own block of shared memory in 16-byte
//   chunks (store_acc_rows_staged), so that global stores cover whole 32-byte sectors.
//   backward, several key tiles (Lk > 64; Lk == 0 runs only the delta and dQ kernels):
//     delta:  delta_i = d_ctx_i . ctx_i, one thread per (token, head).
//     keys:   grid (ceil(Lk/64), H, B). Warp w owns keys w*16..w*16+15 and walks the query
//             tiles (causal: from the tile of its first key): S^T = K Q^T, P^T from the saved
//             lse, dP^T = V dO^T, dS^T = P^T (dP^T f - delta), dV += (P f)^T dO,
//             dK += dS^T Q (scale applied at the end).
//     queries: grid (ceil(Lq/64), H, B); warp w owns 16 queries (Q, dO fragments in
//             registers), walks the key tiles recomputing S, P, dP and accumulates dQ = dS K.
//             Two kernels instead of atomics: dQ, dK, dV are deterministic. The bias gradient
//             comes from column-sum kernels over the outputs.
#include <type_traits>

#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kTile = 64;  // queries per block and keys per tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct AttnParams {
  const void* q;
  const void* k;
  const void* v;
  const void* ctx;
  const void* d_ctx;
  void* out;  // ctx (forward)
  void* dq;
  void* dk;
  void* dv;
  float* lse;
  float* delta;
  float* d_bias;         // [3 H D] fp32: += column sums of dq | dk | dv (null: none)
  float* bias_partials;  // deterministic: [B][3 H D] per-block sums, added by reduce.cu
  int64_t ld_q, ld_k, ld_v, ld_ctx;
  const uint8_t* key_pad;
  int causal;
  int heads, len_q, len_k, head_dim;
  float scale;       // softmax scale (applied to dq, dk)
  float scale_log2;  // scale * log2(e): scores in base 2
  DropoutParams drop;
};

// ---------------------------------------------------------------- tensor-core helpers
template <class T>
__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0,
                                         uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same<T, __half>::value) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#else
  __trap();  // the launcher refuses devices below sm_80
#endif
}

// 2^x in one MUFU.EX2 (ex2.approx.ftz): results below 2^-126 flush to zero, which changes
// nothing here (a probability that small is zero after rounding to fp16/bf16 and beside the
// row's maximum, which is 1). exp2f's denormal handling costs three more instructions.
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Two fp32 values as one register of two T (x in the low half: the lower column).
template <class T>
__device__ __forceinline__ uint32_t pack2(float x, float y) {
  if constexpr (std::is_same<T, __half>::value) {
    __half2 h = __floats2half2_rn(x, y);
    return *reinterpret_cast<uint32_t*>(&h);
  } else {
    __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    return *reinterpret_cast<uint32_t*>(&h);
  }
}

// Four 8 x 8 b16 matrices from shared memory with one ldmatrix.x4: lane i gives the address of
// row i % 8 of matrix i / 8 (16-byte aligned). Without TRANS lane t receives elements
// (t / 4, 2 (t % 4)) and (t / 4, 2 (t % 4) + 1) of each matrix; with TRANS (2 (t % 4), t / 4)
// and (2 (t % 4) + 1, t / 4), i.e. the same of the transposed matrix.
template <bool TRANS, class T>
__device__ __forceinline__ void ldsm_x4(const T* row, uint32_t r[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(row));
  if constexpr (TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#else
  __trap();
#endif
}

// B fragments of two n-blocks (columns n0..n0+7 and n0+8..n0+15) over k rows k0..k0+15 of a
// row-major [k][LD] shared tile, i.e. B read transposed, with one ldmatrix.x4.trans: lane i
// gives the row address of 8 x 8 matrix i / 8 (rows k0 + 8 (j & 1) + i % 8, columns
// n0 + 8 (j >> 1)); the transposed load hands each lane (X[k0 + 2 t4][n0 + g],
// X[k0 + 2 t4 + 1][n0 + g]) per matrix: b[0], b[1] for n0 and b[2], b[3] for n0 + 8. Rows must
// be 16-byte aligned (LD * sizeof(T) % 16 == 0).
template <int LD, class T>
__device__ __forceinline__ void ldsm_b_trans(const T* tile, int k0, int n0, uint32_t b[4]) {
  const int lane = threadIdx.x & 31, j = lane >> 3;
  ldsm_x4<true>(tile + (k0 + (lane & 7) + 8 * (j & 1)) * LD + n0 + 8 * (j >> 1), b);
}

template <class T>
__device__ __forceinline__ void store_pair(T* p, float x, float y) {
  *reinterpret_cast<uint32_t*>(p) = pack2<T>(x, y);
}

// The A operand (16 x 16) of rows row0..row0+15, columns k0..k0+15 of a row-major shared tile
// with rows LDX elements apart (matrix j: rows row0 + 8 (j & 1) + i, columns k0 + 8 (j >> 1):
// a[0] rows 0-7 / k 0-7, a[1] rows 8-15, a[2] k 8-15, a[3] both).
template <int LDX, class T>
__device__ __forceinline__ void lds_a(const T* tile, int row0, int k0, uint32_t a[4]) {
  const int lane = threadIdx.x & 31, j = lane >> 3;
  ldsm_x4<false>(tile + (row0 + (lane & 7) + 8 * (j & 1)) * LDX + k0 + 8 * (j >> 1), a);
}

// acc0 / acc1 += A B for the two 16 x 8 output blocks n0..n0+7 and n0+8..n0+15 whose B (k =
// k0..k0+15) is stored as rows n of a row-major shared tile (B[k][n] = tile[n][k]: Q K^T,
// dO V^T, K Q^T, V dO^T): one ldmatrix.x4 (matrix j: rows n0 + 8 (j >> 1) + i, columns
// k0 + 8 (j & 1)) gives both B fragments of both blocks.
template <int LD, class T>
__device__ __forceinline__ void mma_b_rows2(float acc0[4], float acc1[4], const uint32_t a[4],
                                            const T* tile, int n0, int k0) {
  const int lane = threadIdx.x & 31, j = lane >> 3;
  uint32_t b[4];
  ldsm_x4<false>(tile + (n0 + (lane & 7) + 8 * (j >> 1)) * LD + k0 + 8 * (j & 1), b);
  mma16816<T>(acc0, a, b[0], b[1]);
  mma16816<T>(acc1, a, b[2], b[3]);
}

// The accumulators of two adjacent 8-column blocks (2 kk, 2 kk + 1) in the C layout are the A
// operand of one 16-column step: P or dS goes from one product straight into the next.
template <class T>
__device__ __forceinline__ void a_from_acc(const float (*acc)[4], int kk, uint32_t a[4]) {
  a[0] = pack2<T>(acc[2 * kk][0], acc[2 * kk][1]);
  a[1] = pack2<T>(acc[2 * kk][2], acc[2 * kk][3]);
  a[2] = pack2<T>(acc[2 * kk + 1][0], acc[2 * kk + 1][1]);
  a[3] = pack2<T>(acc[2 * kk + 1][2], acc[2 * kk + 1][3]);
}

// acc[n] (NB blocks of 8 head columns) += A x rows k0..k0+15 of a row-major [k][LD] shared
// tile (P V, dS K, P^T dO, dS^T Q: B read transposed with ldmatrix).
template <int LD, int NB, class T>
__device__ __forceinline__ void mma_b_trans(float (*acc)[4], const uint32_t a[4], const T* tile,
                                            int k0) {
#pragma unroll
  for (int n = 0; n < NB; n += 2) {
    uint32_t b[4];
    ldsm_b_trans<LD>(tile, k0, n * 8, b);
    mma16816<T>(acc[n], a, b[0], b[1]);
    mma16816<T>(acc[n + 1], a, b[2], b[3]);
  }
}

template <int NB>
__device__ __forceinline__ void zero_acc(float (*acc)[4]) {
#pragma unroll
  for (int n = 0; n < NB; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
}

// The column sums over a warp's 16 rows of NB accumulator blocks (columns n * 8 + 2 t4 + c2),
// by a reduce-scatter butterfly over the 8 row groups g (lane bits 4, 3, 2): at each level a
// lane keeps half of its partial sums and receives its partner's partials of that half, so that
// 2 NB sums take 2 NB - 1 shuffles (8 take 7) instead of 3 each. On return `idx` says which sum
// the lane holds: column (idx / 2) * 8 + 2 t4 + idx % 2. With NB = 4 every lane holds a different
// one (idx = g); with NB = 2 the lanes g and g ^ 1 hold the same (the last level is a plain
// reduction) and `owner` is false in the odd one.
template <int NB>
__device__ __forceinline__ float warp_column_sums(const float (*acc)[4], int& idx, bool& owner) {
  static_assert(NB == 2 || NB == 4, "2 or 4 blocks of 8 columns");
  constexpr int V = 2 * NB;
  float v[V];
#pragma unroll
  for (int n = 0; n < NB; ++n)
#pragma unroll
    for (int c2 = 0; c2 < 2; ++c2) v[n * 2 + c2] = acc[n][c2] + acc[n][2 + c2];
  const int lane = threadIdx.x & 31;
  idx = 0;
  owner = true;
  int width = V;
#pragma unroll
  for (int mask = 16; mask >= 4; mask >>= 1) {
    if (width > 1) {
      const bool upper = (lane & mask) != 0;
      const int hw = width / 2;
#pragma unroll
      for (int i = 0; i < hw; ++i) {
        const float send = upper ? v[i] : v[i + hw], keep = upper ? v[i + hw] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, mask);
      }
      if (upper) idx += hw;
      width = hw;
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], mask);
      owner = owner && (lane & mask) == 0;
    }
  }
  return v[0];
}

// Rows row0 + g and row0 + g + 8 of NB accumulator blocks, times scale[0] / scale[1], into a
// token-major matrix (rows ld elements apart): only rows < len and columns < head_dim.
template <int NB, class T>
__device__ __forceinline__ void store_acc_rows(T* base, int64_t ld, int row0, int len, int head_dim,
                                               const float (*acc)[4], const float scale[2]) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int ri = 0; ri < 2; ++ri) {
    const int i = row0 + (lane >> 2) + 8 * ri;
    if (i >= len) continue;
#pragma unroll
    for (int n = 0; n < NB; ++n) {
      const int col = n * 8 + (lane & 3) * 2;
      if (col < head_dim)
        store_pair(base + int64_t(i) * ld + col, acc[n][2 * ri] * scale[ri],
                   acc[n][2 * ri + 1] * scale[ri]);
    }
  }
}

// The same rows through the warp's own 16-row region of a shared tile (rows ldst elements apart,
// from local row srow0 and column scol0): the fragment pairs go to shared memory, then 16-byte
// chunks to global memory, so that each warp store covers whole 32-byte sectors (the pairs
// straight from the fragments fill half a sector each). Only this warp reads or writes that
// region here; it must not be in use by another warp.
template <int NB, class T>
__device__ __forceinline__ void store_acc_rows_staged(T* base, int64_t ld, int row0, int len,
                                                      int head_dim, const float (*acc)[4],
                                                      const float scale[2], T* stage, int ldst,
                                                      int srow0, int scol0) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  __syncwarp();  // the warp's earlier reads of the region (fragment loads) are done
#pragma unroll
  for (int ri = 0; ri < 2; ++ri)
#pragma unroll
    for (int n = 0; n < NB; ++n)
      store_pair(stage + (srow0 + g + 8 * ri) * ldst + scol0 + n * 8 + t4 * 2,
                 acc[n][2 * ri] * scale[ri], acc[n][2 * ri + 1] * scale[ri]);
  __syncwarp();
#pragma unroll
  for (int c = lane; c < 16 * NB; c += 32) {
    const int r = c / NB, col = (c % NB) * 8, i = row0 + r;
    if (i < len && col < head_dim)
      *reinterpret_cast<uint4*>(base + int64_t(i) * ld + col) =
          *reinterpret_cast<const uint4*>(stage + (srow0 + r) * ldst + scol0 + col);
  }
  __syncwarp();  // the region may be written again
}

// Batch b's first row of a token-major matrix (rows ld elements apart, len rows per batch),
// from head column hcol.
template <class T>
__device__ __forceinline__ const T* head_rows(const void* m, int b, int len, int64_t ld, int hcol) {
  return static_cast<const T*>(m) + int64_t(b) * len * ld + hcol;
}

// The (batch b, head h) slice a block works on: the head's columns of the token-major
// projections (rows of batch b), its rows of lse / delta, and the dropout counter offset.
template <class T>
struct HeadSlice {
  int hcol;
  int64_t row_base;                  // lse / delta rows of (b, h)
  const T *q, *k, *v, *d_ctx, *ctx;  // d_ctx: null in the forward
  uint64_t drop_offset;
  __device__ __forceinline__ HeadSlice(const AttnParams& p, int b, int h)
      : hcol(h * p.head_dim),
        row_base((int64_t(b) * p.heads + h) * p.len_q),
        q(head_rows<T>(p.q, b, p.len_q, p.ld_q, hcol)),
        k(head_rows<T>(p.k, b, p.len_k, p.ld_k, hcol)),
        v(head_rows<T>(p.v, b, p.len_k, p.ld_v, hcol)),
        d_ctx(p.d_ctx ? head_rows<T>(p.d_ctx, b, p.len_q, p.ld_ctx, hcol) : nullptr),
        ctx(head_rows<T>(p.ctx, b, p.len_q, p.ld_ctx, hcol)),
        drop_offset(p.drop.active ? dropout_offset(p.drop.key) : 0) {}
};

// ---------------------------------------------------------------- tiles in shared memory
// Rows [row0, row0 + 64) of a token-major matrix (rows of ld elements, the head's columns from
// `base`), `len` valid rows, head_dim valid columns, into a [64][DP + 8] shared tile; rows and
// columns beyond are zero. In two phases, so that every 16-byte load of one or more tiles is
// in flight before the first shared store (a store through a generic pointer would otherwise
// order the next load after it: one memory round trip per chunk).
template <class T, int DP, int NT = kThreads>
struct TileFetch {
  static constexpr int kChunks = DP / 8;  // 16-byte chunks per row
  static constexpr int kPerThread = kTile * kChunks / NT;
  uint4 r[kPerThread];
  __device__ __forceinline__ void fetch(const T* __restrict__ base, int64_t ld, int row0, int len,
                                        int head_dim) {
#pragma unroll
    for (int u = 0; u < kPerThread; ++u) {
      const int c = threadIdx.x + u * NT, row = c / kChunks, col = (c % kChunks) * 8;
      r[u] = make_uint4(0, 0, 0, 0);
      if (row0 + row < len && col < head_dim)
        r[u] = __ldg(reinterpret_cast<const uint4*>(base + int64_t(row0 + row) * ld + col));
    }
  }
  __device__ __forceinline__ void store(T* tile) const {
    constexpr int LD = DP + 8;
#pragma unroll
    for (int u = 0; u < kPerThread; ++u) {
      const int c = threadIdx.x + u * NT, row = c / kChunks, col = (c % kChunks) * 8;
      *reinterpret_cast<uint4*>(tile + row * LD + col) = r[u];
    }
  }
};

// Two tiles at once (K and V, or Q and dO): both fetched, then `in_flight()` (work that does not
// need the tiles: flag loads, dropout bits), then both stored.
struct NoWork {
  __device__ void operator()() const {}
};
template <class T, int DP, class F = NoWork>
__device__ __forceinline__ void load_tiles(T* tile_a, const T* base_a, int64_t ld_a, T* tile_b,
                                           const T* base_b, int64_t ld_b, int row0, int len,
                                           int head_dim, F&& in_flight = F{}) {
  TileFetch<T, DP> a, b;
  a.fetch(base_a, ld_a, row0, len, head_dim);
  b.fetch(base_b, ld_b, row0, len, head_dim);
  in_flight();
  a.store(tile_a);
  b.store(tile_b);
}

// Dropout keep bits of the tile (queries q0.., keys k0..): bits[r][w] bit c = key k0 + 32w + c
// of query q0 + r kept. NT threads share the 64 x 64 tile: thread t draws row t / (NT / 64),
// KP = 64 * 64 / NT consecutive keys (one Philox call per 8 flat elements, philox.h).
template <int NT>
__device__ __forceinline__ void build_drop_bits(uint32_t (*bits)[2], const AttnParams& p,
                                                uint64_t offset, int b, int h, int q0, int k0) {
  constexpr int KP = kTile * kTile / NT, kParts = kTile / KP;
  static_assert(KP == 16 || KP == 32, "16 or 32 keys per thread");
  const int r = threadIdx.x / kParts, part = threadIdx.x % kParts;
  const int i = q0 + r, j0 = k0 + KP * part;
  uint32_t word = 0;
  if (i < p.len_q && j0 < p.len_k) {
    const uint64_t start =
        (uint64_t(uint64_t(b) * p.heads + h) * p.len_q + i) * uint64_t(p.len_k) + j0;
    const int n = min(KP, p.len_k - j0);
    const uint32_t thr = p.drop.threshold;
    if ((start & 7) == 0 && n == KP) {  // whole draws (len_k a multiple of 8)
#pragma unroll
      for (int u = 0; u < KP / 8; ++u)
        word |=
            dropout_keep_bits8(dropout_draw_fast(p.drop.key.seed, (start >> 3) + u, offset), thr)
            << (8 * u);
    } else {
      const uint64_t end = start + n;
      for (uint64_t grp = start >> 3; grp <= (end - 1) >> 3; ++grp) {
        const uint32_t kb =
            dropout_keep_bits8(dropout_draw_fast(p.drop.key.seed, grp, offset), thr);
        const int sh = int(int64_t(grp * 8) - int64_t(start));  // -7..KP-1
        word |= sh >= 0 ? kb << sh : kb >> -sh;
      }
      if (n < 32) word &= (1u << n) - 1u;
    }
  }
  if constexpr (KP == 32)
    bits[r][part] = word;
  else
    reinterpret_cast<uint16_t*>(&bits[0][0])[r * kParts + part] = uint16_t(word);
}

__device__ __forceinline__ float drop_factor(const uint32_t (*bits)[2], const DropoutParams& d,
                                             int r, int c) {
  if (!d.active) return 1.f;
  return (bits[r][c >> 5] >> (c & 31)) & 1u ? d.scale : 0.f;
}

// Whether key j of batch b is excluded from every query: beyond the keys, or padding.
__device__ __forceinline__ bool key_hidden(const AttnParams& p, int b, int j) {
  return j >= p.len_k || (p.key_pad != nullptr && p.key_pad[int64_t(b) * p.len_k + j] != 0);
}

// The key-padding flags of a 64-key tile as one 64-bit word (bit c: key k0 + c hidden), from
// warps 0 and 1 (thread c < 64 passes key_hidden(p, b, k0 + c), loaded by the caller ahead of
// its tile loads' first use); the result is in shared memory after the caller's next
// __syncthreads.
__device__ __forceinline__ void build_pad_word(uint32_t* pad_words, bool hidden) {
  if (threadIdx.x < kTile) {
    const unsigned word = __ballot_sync(0xffffffffu, hidden);
    if ((threadIdx.x & 31) == 0) pad_words[threadIdx.x >> 5] = word;
  }
}

// ---------------------------------------------------------------- forward
template <class T, int DP>
__global__ void __launch_bounds__(kThreads, 4) attention_forward_kernel(AttnParams p) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  constexpr int LD = DP + 8, KS = DP / 16, NB = DP / 8;
  __shared__ __align__(16) T qs[kTile * LD];
  __shared__ __align__(16) T ks[kTile * LD];
  __shared__ __align__(16) T vs[kTile * LD];
  __shared__ uint32_t bits[kTile][2];
  __shared__ uint32_t pad_words[2];
  const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * kTile;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const HeadSlice<T> hs(p, b, h);

  // Q and the first K, V tiles in one round trip, the tile's key-padding flags loaded and its
  // dropout bits drawn while they are in flight (the Philox rounds are most of the block's
  // integer work). Q fragments (A operand, rows = this warp's 16 queries) then stay in registers.
  {
    TileFetch<T, DP> fq;
    fq.fetch(hs.q, p.ld_q, q0, p.len_q, p.head_dim);
    bool hidden = false;
    load_tiles<T, DP>(ks, hs.k, p.ld_k, vs, hs.v, p.ld_v, 0, p.len_k, p.head_dim, [&] {
      hidden = threadIdx.x < kTile && key_hidden(p, b, threadIdx.x);
      if (p.drop.active) build_drop_bits<kThreads>(bits, p, hs.drop_offset, b, h, q0, 0);
    });
    build_pad_word(pad_words, hidden);
    fq.store(qs);
  }
  __syncthreads();
  const int r0 = warp * 16 + g;  // local rows r0 and r0 + 8
  uint32_t qf[KS][4];
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) lds_a<LD>(qs, warp * 16, kk * 16, qf[kk]);

  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float o[NB][4];
#pragma unroll
  for (int n = 0; n < NB; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  const int rows_i[2] = {q0 + r0, q0 + r0 + 8};

  int tiles = (p.len_k + kTile - 1) / kTile;
  if (p.causal) tiles = min(tiles, (q0 + kTile - 1) / kTile + 1);
  for (int kt = 0; kt < tiles; ++kt) {
    const int k0 = kt * kTile;
    if (kt > 0) {       // the first tile came with Q
      __syncthreads();  // the previous tile is no longer read
      // Here the dropout bits come after the stores: drawn in flight, with o, m, l and the Q
      // fragments live, they took the kernel from 16 to 64 bytes of spill.
      bool hidden = false;
      load_tiles<T, DP>(ks, hs.k, p.ld_k, vs, hs.v, p.ld_v, k0, p.len_k, p.head_dim, [&] {
        hidden = threadIdx.x < kTile && key_hidden(p, b, k0 + threadIdx.x);
      });
      build_pad_word(pad_words, hidden);
      if (p.drop.active) build_drop_bits<kThreads>(bits, p, hs.drop_offset, b, h, q0, k0);
      __syncthreads();
    }
    // Per row of this thread: which of the tile's keys it sees (padding, causal) and keeps
    // (dropout), as 64-bit words shifted so that bit nb * 8 + (e & 1) is element (nb, e):
    // no shared-memory read or runtime shift per element.
    uint64_t see[2], keep[2];
    {
      const uint64_t visible = ~(uint64_t(pad_words[0]) | (uint64_t(pad_words[1]) << 32));
#pragma unroll
      for (int ri = 0; ri < 2; ++ri) {
        uint64_t v = visible;
        if (p.causal) {  // keys k0 + c with c <= i - k0
          const int last = rows_i[ri] - k0;
          v = last < 0 ? 0 : last >= 63 ? v : v & ((uint64_t(2) << last) - 1);
        }
        see[ri] = v >> (t4 * 2);
        const int r = r0 + 8 * ri;
        keep[ri] = p.drop.active ? (uint64_t(bits[r][0]) | (uint64_t(bits[r][1]) << 32)) >> (t4 * 2)
                                 : ~uint64_t(0);
      }
    }

    float s[8][4];
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.f;
#pragma unroll
    for (int nb = 0; nb < 8; nb += 2)
#pragma unroll
      for (int kk = 0; kk < KS; ++kk)
        mma_b_rows2<LD>(s[nb], s[nb + 1], qf[kk], ks, nb * 8, kk * 16);
    // Scale to base 2 and mask; the row maxima over the quad.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nb = 0; nb < 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int ri = e >> 1;
        const bool seen = (see[ri] >> (nb * 8 + (e & 1))) & 1u;
        s[nb][e] = seen ? s[nb][e] * p.scale_log2 : -INFINITY;
        mx[ri] = fmaxf(mx[ri], s[nb][e]);
      }
    float alpha[2], base[2];
#pragma unroll
    for (int ri = 0; ri < 2; ++ri) {
      mx[ri] = fmaxf(mx[ri], __shfl_xor_sync(0xffffffffu, mx[ri], 1));
      mx[ri] = fmaxf(mx[ri], __shfl_xor_sync(0xffffffffu, mx[ri], 2));
      const float m_new = fmaxf(m[ri], mx[ri]);
      base[ri] = m_new == -INFINITY ? 0.f : m_new;  // nothing visible yet: exp2(-inf) = 0
      alpha[ri] = exp2_ftz(m[ri] - base[ri]);
      m[ri] = m_new;
      l[ri] *= alpha[ri];
    }
    if (kt > 0) {  // o is still zero at the first tile
#pragma unroll
      for (int n = 0; n < NB; ++n) {
        o[n][0] *= alpha[0];
        o[n][1] *= alpha[0];
        o[n][2] *= alpha[1];
        o[n][3] *= alpha[1];
      }
    }
    // P (for the sum) and the dropped P (for P V), in place of the scores.
#pragma unroll
    for (int nb = 0; nb < 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int ri = e >> 1;
        const float pr = exp2_ftz(s[nb][e] - base[ri]);
        l[ri] += pr;
        s[nb][e] = (keep[ri] >> (nb * 8 + (e & 1))) & 1u ? pr : 0.f;  // 1 / (1 - p) at the end
      }
      // O += P V: A = P (16 queries x 16 keys per step), B = V (keys x head columns).
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t a[4];
      a_from_acc<T>(s, kk, a);
      mma_b_trans<LD, NB>(o, a, vs, kk * 16);
    }
  }

  // Normalise and write: ctx rows and lse (natural log).
  float inv[2];
#pragma unroll
  for (int ri = 0; ri < 2; ++ri) {
    float sum = l[ri];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const bool empty = !(sum > 0.f);
    inv[ri] = empty ? 0.f : p.drop.scale / sum;  // drop.scale is 1 without dropout
    const int i = rows_i[ri];
    if (t4 == 0 && i < p.len_q)
      p.lse[(int64_t(b) * p.heads + h) * p.len_q + i] =
          empty ? -INFINITY : (m[ri] + log2f(sum)) * kLn2;
  }
  // Through qs: the warp's own 16 rows, which only it read (into qf) at the start.
  store_acc_rows_staged<NB>(static_cast<T*>(p.out) + int64_t(b) * p.len_q * p.ld_ctx + hs.hcol,
                            p.ld_ctx, q0 + warp * 16, p.len_q, p.head_dim, o, inv, qs, LD,
                            warp * 16, 0);
}

// ---------------------------------------------------------------- delta
template <class T>
__global__ void attention_delta_kernel(AttnParams p, int64_t rows) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // (token, head)
  if (t >= rows) return;
  const int64_t token = t / p.heads;
  const int h = int(t % p.heads);
  const int64_t b = token / p.len_q, i = token % p.len_q;
  const T* go = static_cast<const T*>(p.d_ctx) + token * p.ld_ctx + int64_t(h) * p.head_dim;
  const T* o = static_cast<const T*>(p.ctx) + token * p.ld_ctx + int64_t(h) * p.head_dim;
  float acc = 0.f;
  for (int d = 0; d < p.head_dim; d += 8) {
    uint4 a = *reinterpret_cast<const uint4*>(go + d), c = *reinterpret_cast<const uint4*>(o + d);
    const T* ae = reinterpret_cast<const T*>(&a);
    const T* ce = reinterpret_cast<const T*>(&c);
#pragma unroll
    for (int e = 0; e < 8; ++e) acc += to_f32(ae[e]) * to_f32(ce[e]);
  }
  p.delta[(b * p.heads + h) * p.len_q + i] = acc;
}

// S^T = K Q^T and dP^T = V dO^T for the warp's 16 keys row0.. and the NQ blocks of 8 queries
// from c0 (zeroed here first), K, V, Q and dO tiles [row][LD] in shared memory. The K and V
// fragments (A operands) are read per 16-column step rather than kept in registers for the
// whole block (fewer registers, more resident blocks).
template <int LD, int KS, int NQ, class T>
__device__ __forceinline__ void scores_t(float (*st)[4], float (*dpt)[4], const T* ks, const T* vs,
                                         const T* qs, const T* dos, int row0, int c0) {
#pragma unroll
  for (int nb = 0; nb < NQ; ++nb)
#pragma unroll
    for (int e = 0; e < 4; ++e) st[nb][e] = dpt[nb][e] = 0.f;
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
    uint32_t kf[4], vf[4];
    lds_a<LD>(ks, row0, kk * 16, kf);
    lds_a<LD>(vs, row0, kk * 16, vf);
#pragma unroll
    for (int nb = 0; nb < NQ; nb += 2) {
      mma_b_rows2<LD>(st[nb], st[nb + 1], kf, qs, c0 + nb * 8, kk * 16);
      mma_b_rows2<LD>(dpt[nb], dpt[nb + 1], vf, dos, c0 + nb * 8, kk * 16);
    }
  }
}

// ---------------------------------------------------------------- backward: key tiles
template <class T, int DP>
// Two blocks per SM without register spills (243 registers); three blocks forced 168 registers
// and ~230 bytes of spills for the same time.
__global__ void __launch_bounds__(kThreads, 2) attention_backward_kv_kernel(AttnParams p) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  constexpr int LD = DP + 8, KS = DP / 16, NB = DP / 8;
  __shared__ __align__(16) T ks[kTile * LD];
  __shared__ __align__(16) T vs[kTile * LD];
  __shared__ __align__(16) T qs[kTile * LD];
  __shared__ __align__(16) T dos[kTile * LD];
  __shared__ float lse2[kTile], dl[kTile];
  __shared__ uint32_t bits[kTile][2];
  __shared__ uint8_t kpad[kTile];
  const int b = blockIdx.z, h = blockIdx.y, k0 = blockIdx.x * kTile;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const HeadSlice<T> hs(p, b, h);

  const int q_first = p.causal ? k0 / kTile : 0, q_tiles = (p.len_q + kTile - 1) / kTile;
  {  // K, V and the first query tile's Q, dO in one round trip
    TileFetch<T, DP> fk, fv, fq, fg;
    fk.fetch(hs.k, p.ld_k, k0, p.len_k, p.head_dim);
    fv.fetch(hs.v, p.ld_v, k0, p.len_k, p.head_dim);
    if (q_first < q_tiles) {
      fq.fetch(hs.q, p.ld_q, q_first * kTile, p.len_q, p.head_dim);
      fg.fetch(hs.d_ctx, p.ld_ctx, q_first * kTile, p.len_q, p.head_dim);
    }
    fk.store(ks);
    fv.store(vs);
    if (q_first < q_tiles) {
      fq.store(qs);
      fg.store(dos);
    }
  }
  if (threadIdx.x < kTile) kpad[threadIdx.x] = key_hidden(p, b, k0 + threadIdx.x);
  __syncthreads();
  const int r0 = warp * 16 + g;  // this warp's local keys r0 and r0 + 8
  const bool key_off[2] = {kpad[r0] != 0, kpad[r0 + 8] != 0};  // this thread's two keys
  const int keys_j[2] = {k0 + r0, k0 + r0 + 8};

  float dk[NB][4], dv[NB][4];
#pragma unroll
  for (int n = 0; n < NB; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.f;

  for (int qt = q_first; qt < q_tiles; ++qt) {
    const int q0 = qt * kTile;
    __syncthreads();  // the previous query tile is no longer read
    // The tile's lse, delta and dropout bits: while its Q and dO are in flight (load_tiles),
    // except for the first tile, which the prologue loaded.
    auto tile_rows = [&] {
      if (threadIdx.x < kTile) {
        const int i = q0 + threadIdx.x;
        float L = i < p.len_q ? p.lse[hs.row_base + i] : -INFINITY;
        lse2[threadIdx.x] = L == -INFINITY ? INFINITY : L * kLog2e;  // +inf: P = 0
        dl[threadIdx.x] = i < p.len_q ? p.delta[hs.row_base + i] : 0.f;
      }
      if (p.drop.active) build_drop_bits<kThreads>(bits, p, hs.drop_offset, b, h, q0, k0);
    };
    if (qt > q_first)
      load_tiles<T, DP>(qs, hs.q, p.ld_q, dos, hs.d_ctx, p.ld_ctx, q0, p.len_q, p.head_dim,
                        tile_rows);
    else
      tile_rows();
    __syncthreads();
    // S^T = K Q^T and dP^T = V dO^T (16 keys x 64 queries per warp).
    float st[8][4], dpt[8][4];
    scores_t<LD, KS, 8>(st, dpt, ks, vs, qs, dos, warp * 16, 0);
    // P^T, the dropped P^T (into st) and dS^T (into dpt).
#pragma unroll
    for (int nb = 0; nb < 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = nb * 8 + t4 * 2 + (e & 1), i = q0 + c, kr = e >> 1;
        const bool hidden = key_off[kr] || (p.causal && keys_j[kr] > i);
        const float pr = hidden ? 0.f : exp2_ftz(st[nb][e] * p.scale_log2 - lse2[c]);
        const float f = drop_factor(bits, p.drop, c, r0 + 8 * kr);
        st[nb][e] = pr * f;
        dpt[nb][e] = pr * (dpt[nb][e] * f - dl[c]);
      }
      // dV += (P f)^T dO and dK += dS^T Q: A from the accumulators (keys x 16 queries per step),
      // B = dO / Q (queries x head columns), read transposed.
#pragma unroll
    for (int kq = 0; kq < 4; ++kq) {
      uint32_t ap[4], as[4];
      a_from_acc<T>(st, kq, ap);
      a_from_acc<T>(dpt, kq, as);
      mma_b_trans<LD, NB>(dv, ap, dos, kq * 16);
      mma_b_trans<LD, NB>(dk, as, qs, kq * 16);
    }
  }

  const float dk_scale[2] = {p.scale, p.scale}, dv_scale[2] = {1.f, 1.f};
  store_acc_rows<NB>(static_cast<T*>(p.dk) + int64_t(b) * p.len_k * p.ld_k + hs.hcol, p.ld_k,
                     k0 + warp * 16, p.len_k, p.head_dim, dk, dk_scale);
  store_acc_rows<NB>(static_cast<T*>(p.dv) + int64_t(b) * p.len_k * p.ld_v + hs.hcol, p.ld_v,
                     k0 + warp * 16, p.len_k, p.head_dim, dv, dv_scale);
}

// ---------------------------------------------------------------- backward: one key tile
// Lk <= 64: one block per (batch, head) owns every key and walks the query tiles. 8 warps; per
// query tile, two phases through shared memory:
//   1. warp w computes the 16 keys (w % 4) x 32 queries (w / 4) block of S^T = K Q^T and
//      dP^T = V dO^T and stores the dropped P^T and dS^T ([key][query], in T);
//   2. warp w owns rows (w % 4) x 16 and head columns (w / 4) x DP / 2 of dV += P^T dO and
//      dK += dS^T Q (keys, accumulated over the query tiles) and of dQ = scale dS K (queries,
//      dS read transposed with ldmatrix.trans), stored per tile.
// delta_i = dO_i . O_i comes from the tile loads' registers (the lanes that loaded row i add
// their 8-column chunks with shuffles). Column sums of dq, dk, dv (the projections' bias
// gradient): per warp through shuffles, then over the 4 row groups in a fixed order.
constexpr int kOneTileThreads = 256;

// The A operand (rows m0..m0+15, k = k0..k0+15) of A[m][k] = X[k][m] for a row-major [k][LDX]
// shared tile X, with one ldmatrix.x4.trans (matrix j: rows k0 + 8 (j >> 1) + i, columns
// m0 + 8 (j & 1)).
template <int LDX, class T>
__device__ __forceinline__ void ldsm_a_trans(const T* tile, int m0, int k0, uint32_t a[4]) {
  const int lane = threadIdx.x & 31, j = lane >> 3;
  ldsm_x4<true>(tile + (k0 + (lane & 7) + 8 * (j >> 1)) * LDX + m0 + 8 * (j & 1), a);
}

template <class T, int DP>
struct OneTileSmem {
  static constexpr int LD = DP + 8, LDS = kTile + 8;
  T k[kTile * LD], v[kTile * LD], q[kTile * LD], dO[kTile * LD];
  T pt[kTile * LDS], dst[kTile * LDS];  // dropped P^T and dS^T, [key][query]
  T stage[kTile * LD];  // dq, dk, dv on their way out: warp (rg, half) owns its 16 x DP/2 block
  float lse2[kTile], dl[kTile];
  uint32_t bits[kTile][2];
  float col[3][4][DP];  // column sums of dq, dk, dv per row group
};

// Three blocks per SM (80 registers) measured 5% faster than two (124 registers). kOneQueryTile
// (1 <= Lq <= 64, the layers' short rows): no query-tile loop, and phase 2 computes dV, dK and dQ
// one after another, so that 16 accumulators per thread are live instead of 48 (the general
// form spilled ~150 bytes and left no registers to load fragments ahead of the mma).
template <class T, int DP, bool kOneQueryTile>
__global__ void __launch_bounds__(kOneTileThreads, 3)
    attention_backward_one_tile_kernel(AttnParams p) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  constexpr int NT = kOneTileThreads, LD = DP + 8, LDS = kTile + 8, KS = DP / 16;
  constexpr int NBH = DP / 16;  // 8-column blocks per warp in phase 2 (half the head)
  extern __shared__ __align__(16) unsigned char one_tile_smem[];
  auto& sm = *reinterpret_cast<OneTileSmem<T, DP>*>(one_tile_smem);
  const int b = blockIdx.z, h = blockIdx.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int rg = warp & 3, half = warp >> 2;  // row group; query (phase 1) / column half (2)
  const HeadSlice<T> hs(p, b, h);
  const int q_tiles = kOneQueryTile ? 1 : (p.len_q + kTile - 1) / kTile;
  const bool bias = p.d_bias != nullptr;

  // This thread's keys in phase 1 and its columns in phase 2.
  const int key_r[2] = {rg * 16 + g, rg * 16 + g + 8};
  const int c_half = half * (DP / 2);

  // Q, dO, O and lse of a query tile into registers (O in dO's layout, so that the lanes holding
  // row i's chunks add delta_i = dO_i . O_i without shared memory); then, with the loads in
  // flight, the tile's dropout bits; then Q, dO, lse and delta to shared memory.
  using Fetch = TileFetch<T, DP, NT>;
  struct QueryFetch {
    Fetch q, g, o;
    float lse;  // threads < 64: row q0 + threadIdx.x
  };
  auto fetch_queries = [&](QueryFetch& f, int q0) {
    f.q.fetch(hs.q, p.ld_q, q0, p.len_q, p.head_dim);
    f.g.fetch(hs.d_ctx, p.ld_ctx, q0, p.len_q, p.head_dim);
    f.o.fetch(hs.ctx, p.ld_ctx, q0, p.len_q, p.head_dim);
    const int i = q0 + int(threadIdx.x);
    f.lse = threadIdx.x < kTile && i < p.len_q ? p.lse[hs.row_base + i] : -INFINITY;
  };
  auto stage_queries = [&](const QueryFetch& f, int q0) {
    if (p.drop.active) build_drop_bits<NT>(sm.bits, p, hs.drop_offset, b, h, q0, 0);
    if (threadIdx.x < kTile)
      sm.lse2[threadIdx.x] = f.lse == -INFINITY ? INFINITY : f.lse * kLog2e;  // +inf: P = 0
    const Fetch &fq = f.q, &fg = f.g, &fo = f.o;
    fq.store(sm.q);
    fg.store(sm.dO);
#pragma unroll
    for (int u = 0; u < Fetch::kPerThread; ++u) {
      const T* ge = reinterpret_cast<const T*>(&fg.r[u]);
      const T* oe = reinterpret_cast<const T*>(&fo.r[u]);
      float acc = 0.f;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc += to_f32(ge[e]) * to_f32(oe[e]);
#pragma unroll
      for (int m = 1; m < Fetch::kChunks; m <<= 1) acc += __shfl_xor_sync(0xffffffffu, acc, m);
      const int c = threadIdx.x + u * NT, row = c / Fetch::kChunks;
      if (c % Fetch::kChunks == 0) {
        sm.dl[row] = acc;
        if (q0 + row < p.len_q) p.delta[hs.row_base + q0 + row] = acc;
      }
    }
  };
  bool key_off[2];  // this thread's keys in phase 1 hidden (padding or beyond len_k)
  {  // K, V, the key-padding flags and the first query tile in one round trip
    Fetch fk, fv;
    QueryFetch fq;
    fk.fetch(hs.k, p.ld_k, 0, p.len_k, p.head_dim);
    fv.fetch(hs.v, p.ld_v, 0, p.len_k, p.head_dim);
    if (q_tiles > 0) fetch_queries(fq, 0);
#pragma unroll
    for (int kr = 0; kr < 2; ++kr) key_off[kr] = key_hidden(p, b, key_r[kr]);
    for (int i = threadIdx.x; i < 3 * 4 * DP; i += NT) (&sm.col[0][0][0])[i] = 0.f;
    if (q_tiles > 0) stage_queries(fq, 0);
    fk.store(sm.k);
    fv.store(sm.v);
  }

  // An output block of this warp (rows row0 + rg * 16.., head columns c_half..) times scale: its
  // column sums into sm.col[seg][rg] (added over the query tiles), then out through the warp's
  // block of sm.stage.
  auto finish_output = [&](const float(*acc)[4], void* out, int len, int64_t ld, int row0, int seg,
                           float scale) {
    if (bias) {
      int idx;
      bool owner;
      const float v = warp_column_sums<NBH>(acc, idx, owner);
      if (owner) sm.col[seg][rg][c_half + (idx >> 1) * 8 + t4 * 2 + (idx & 1)] += v * scale;
    }
    const float sc[2] = {scale, scale};
    const int64_t rows_before = seg == 0 ? int64_t(b) * p.len_q : int64_t(b) * p.len_k;
    store_acc_rows_staged<NBH>(static_cast<T*>(out) + rows_before * ld + hs.hcol + c_half, ld,
                               row0 + rg * 16, len, p.head_dim - c_half, acc, sc, sm.stage, LD,
                               rg * 16, c_half);
  };

  float dk[NBH][4], dv[NBH][4];  // accumulated over the query tiles (general form only)
  zero_acc<NBH>(dk);
  zero_acc<NBH>(dv);

  for (int qt = 0; qt < q_tiles; ++qt) {
    const int q0 = qt * kTile;
    if (qt > 0) {
      QueryFetch fq;
      fetch_queries(fq, q0);
      __syncthreads();  // the previous query tile is no longer read
      stage_queries(fq, q0);
    }
    __syncthreads();

    // Phase 1: S^T and dP^T for keys rg * 16.., queries half * 32.. (two steps of 16, to hold
    // fewer accumulators); P^T (dropped) and dS^T to shared memory.
    {
#pragma unroll 1
      for (int c0 = half * 32; c0 < half * 32 + 32; c0 += 16) {
        float st[2][4], dpt[2][4];
        scores_t<LD, KS, 2>(st, dpt, sm.k, sm.v, sm.q, sm.dO, rg * 16, c0);
#pragma unroll
        for (int nb = 0; nb < 2; ++nb)
#pragma unroll
          for (int kr = 0; kr < 2; ++kr) {
            float pd[2], ds[2];
#pragma unroll
            for (int e1 = 0; e1 < 2; ++e1) {
              const int e = 2 * kr + e1, c = c0 + nb * 8 + t4 * 2 + e1;
              const bool hidden = key_off[kr] || (p.causal && key_r[kr] > q0 + c);
              const float pr = hidden ? 0.f : exp2_ftz(st[nb][e] * p.scale_log2 - sm.lse2[c]);
              const float f = drop_factor(sm.bits, p.drop, c, key_r[kr]);
              pd[e1] = pr * f;
              ds[e1] = pr * (dpt[nb][e] * f - sm.dl[c]);
            }
            const int off = key_r[kr] * LDS + c0 + nb * 8 + t4 * 2;
            store_pair(sm.pt + off, pd[0], pd[1]);
            store_pair(sm.dst + off, ds[0], ds[1]);
          }
      }
    }
    __syncthreads();

    // Phase 2: dV, dK (rows = keys rg * 16..) and dQ (rows = queries q0 + rg * 16..), head
    // columns c_half.. (NBH blocks of 8); k runs over the tile's 64 queries / keys.
    if constexpr (kOneQueryTile) {
      float acc[NBH][4];
      zero_acc<NBH>(acc);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {  // dV = P^T dO
        uint32_t a[4];
        lds_a<LDS>(sm.pt, rg * 16, kk * 16, a);
        mma_b_trans<LD, NBH>(acc, a, sm.dO + c_half, kk * 16);
      }
      finish_output(acc, p.dv, p.len_k, p.ld_v, 0, 2, 1.f);
      zero_acc<NBH>(acc);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {  // dK = scale dS^T Q
        uint32_t a[4];
        lds_a<LDS>(sm.dst, rg * 16, kk * 16, a);
        mma_b_trans<LD, NBH>(acc, a, sm.q + c_half, kk * 16);
      }
      finish_output(acc, p.dk, p.len_k, p.ld_k, 0, 1, p.scale);
      zero_acc<NBH>(acc);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {  // dQ = scale dS K
        uint32_t a[4];
        ldsm_a_trans<LDS>(sm.dst, rg * 16, kk * 16, a);
        mma_b_trans<LD, NBH>(acc, a, sm.k + c_half, kk * 16);
      }
      finish_output(acc, p.dq, p.len_q, p.ld_q, q0, 0, p.scale);
    } else {
      float dq[NBH][4];
      zero_acc<NBH>(dq);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        uint32_t a[4];
        lds_a<LDS>(sm.pt, rg * 16, kk * 16, a);
        mma_b_trans<LD, NBH>(dv, a, sm.dO + c_half, kk * 16);
        lds_a<LDS>(sm.dst, rg * 16, kk * 16, a);
        mma_b_trans<LD, NBH>(dk, a, sm.q + c_half, kk * 16);
        ldsm_a_trans<LDS>(sm.dst, rg * 16, kk * 16, a);
        mma_b_trans<LD, NBH>(dq, a, sm.k + c_half, kk * 16);
      }
      finish_output(dq, p.dq, p.len_q, p.ld_q, q0, 0, p.scale);
    }
  }

  if constexpr (!kOneQueryTile) {
    finish_output(dk, p.dk, p.len_k, p.ld_k, 0, 1, p.scale);
    finish_output(dv, p.dv, p.len_k, p.ld_v, 0, 2, 1.f);
  }
  if (!bias) return;
  __syncthreads();
  const int64_t HD = int64_t(p.heads) * p.head_dim;
  for (int idx = threadIdx.x; idx < 3 * p.head_dim; idx += NT) {
    const int seg = idx / p.head_dim, col = idx % p.head_dim;
    const float sum =
        ((sm.col[seg][0][col] + sm.col[seg][1][col]) + sm.col[seg][2][col]) + sm.col[seg][3][col];
    const int64_t out = seg * HD + hs.hcol + col;
    if (p.bias_partials != nullptr)
      p.bias_partials[int64_t(b) * 3 * HD + out] = sum;
    else
      atomicAdd(p.d_bias + out, sum);
  }
}

// ---------------------------------------------------------------- backward: query tiles (dQ)
template <class T, int DP>
__global__ void __launch_bounds__(kThreads) attention_backward_q_kernel(AttnParams p) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  constexpr int LD = DP + 8, KS = DP / 16, NB = DP / 8;
  __shared__ __align__(16) T ks[kTile * LD];
  __shared__ __align__(16) T vs[kTile * LD];
  __shared__ uint32_t bits[kTile][2];
  __shared__ uint8_t kpad[kTile];
  const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * kTile;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const HeadSlice<T> hs(p, b, h);

  const int r0 = warp * 16 + g;
  uint32_t qf[KS][4], gf[KS][4];
  load_tiles<T, DP>(ks, hs.q, p.ld_q, vs, hs.d_ctx, p.ld_ctx, q0, p.len_q, p.head_dim);
  __syncthreads();
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {  // Q (staged in ks) and dO (in vs), rows = this warp's
    lds_a<LD>(ks, warp * 16, kk * 16, qf[kk]);
    lds_a<LD>(vs, warp * 16, kk * 16, gf[kk]);
  }
  const int rows_i[2] = {q0 + r0, q0 + r0 + 8};
  float lse2[2], dl[2];
#pragma unroll
  for (int ri = 0; ri < 2; ++ri) {
    const int i = rows_i[ri];
    const float L = i < p.len_q ? p.lse[hs.row_base + i] : -INFINITY;
    lse2[ri] = L == -INFINITY ? INFINITY : L * kLog2e;
    dl[ri] = i < p.len_q ? p.delta[hs.row_base + i] : 0.f;
  }
  float dq[NB][4];
#pragma unroll
  for (int n = 0; n < NB; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.f;

  int tiles = (p.len_k + kTile - 1) / kTile;
  if (p.causal) tiles = min(tiles, (q0 + kTile - 1) / kTile + 1);
  for (int kt = 0; kt < tiles; ++kt) {
    const int k0 = kt * kTile;
    __syncthreads();
    bool hidden = false;
    load_tiles<T, DP>(ks, hs.k, p.ld_k, vs, hs.v, p.ld_v, k0, p.len_k, p.head_dim, [&] {
      hidden = threadIdx.x < kTile && key_hidden(p, b, k0 + threadIdx.x);
      if (p.drop.active) build_drop_bits<kThreads>(bits, p, hs.drop_offset, b, h, q0, k0);
    });
    if (threadIdx.x < kTile) kpad[threadIdx.x] = hidden;
    __syncthreads();
    float s[8][4], dp[8][4];
#pragma unroll
    for (int nb = 0; nb < 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nb][e] = dp[nb][e] = 0.f;
#pragma unroll
    for (int nb = 0; nb < 8; nb += 2)
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        mma_b_rows2<LD>(s[nb], s[nb + 1], qf[kk], ks, nb * 8, kk * 16);
        mma_b_rows2<LD>(dp[nb], dp[nb + 1], gf[kk], vs, nb * 8, kk * 16);
      }
#pragma unroll
    for (int nb = 0; nb < 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = nb * 8 + t4 * 2 + (e & 1), j = k0 + c, ri = e >> 1;
        const bool hidden = kpad[c] || (p.causal && j > rows_i[ri]);
        const float pr = hidden ? 0.f : exp2_ftz(s[nb][e] * p.scale_log2 - lse2[ri]);
        const float f = drop_factor(bits, p.drop, r0 + 8 * ri, c);
        s[nb][e] = pr * (dp[nb][e] * f - dl[ri]);  // dS
      }
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t a[4];
      a_from_acc<T>(s, kk, a);
      mma_b_trans<LD, NB>(dq, a, ks, kk * 16);
    }
  }
  const float dq_scale[2] = {p.scale, p.scale};
  store_acc_rows<NB>(static_cast<T*>(p.dq) + int64_t(b) * p.len_q * p.ld_q + hs.hcol, p.ld_q,
                     q0 + warp * 16, p.len_q, p.head_dim, dq, dq_scale);
}

// ---------------------------------------------------------------- host side
AttnParams make_params(const AttentionArgs& a, const char* call) {
  LS_REQUIRE(a.dt == DType::F16 || a.dt == DType::BF16, LS_ERR_UNSUPPORTED,
             call << ": fused attention runs in fp16 or bf16, got " << dtype_name(a.dt));
  LS_REQUIRE(a.head_dim % 8 == 0 && a.head_dim <= kFusedAttentionMaxHeadDim, LS_ERR_UNSUPPORTED,
             call << ": head_dim " << a.head_dim << " is not a multiple of 8 up to "
                  << kFusedAttentionMaxHeadDim);
  LS_CHECK_ARG(a.ld_q % 8 == 0 && a.ld_k % 8 == 0 && a.ld_v % 8 == 0 && a.ld_ctx % 8 == 0,
               call << ": row strides must be multiples of 8 elements (16-byte rows)");
  LS_CHECK_ARG(a.batch <= 65535 && a.heads <= 65535 && a.len_q <= INT32_MAX - kTile &&
                   a.len_k <= INT32_MAX - kTile,
               call << ": batch, heads or lengths too large for the launch grid");
  LS_REQUIRE(device_attribute<cudaDevAttrComputeCapabilityMajor>() >= 8, LS_ERR_UNSUPPORTED,
             call << ": fused attention needs sm_80 or newer (mma.sync)");
  AttnParams p{};
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.ctx = a.ctx;
  p.lse = static_cast<float*>(a.lse);
  p.ld_q = a.ld_q;
  p.ld_k = a.ld_k;
  p.ld_v = a.ld_v;
  p.ld_ctx = a.ld_ctx;
  p.key_pad = a.key_pad;
  p.causal = a.causal ? 1 : 0;
  p.heads = int(a.heads);
  p.len_q = int(a.len_q);
  p.len_k = int(a.len_k);
  p.head_dim = int(a.head_dim);
  p.scale = a.scale;
  p.scale_log2 = a.scale * kLog2e;
  p.drop = make_dropout(a.dropout, a.key);
  return p;
}

template <class F>
void dispatch_attention(DType dt, int64_t head_dim, F&& f) {
  auto by_dim = [&](auto tv) {
    if (head_dim <= 32)
      f(tv, std::integral_constant<int, 32>{});
    else
      f(tv, std::integral_constant<int, 64>{});
  };
  if (dt == DType::F16)
    by_dim(__half{});
  else
    by_dim(__nv_bfloat16{});
}

}  // namespace

void launch_attention_forward(const AttentionArgs& a, cudaStream_t s) {
  const char* call = "attention_forward";
  AttnParams p = make_params(a, call);
  LS_CHECK_ARG(aligned16(a.q) && aligned16(a.k) && aligned16(a.v) && aligned16(a.ctx),
               call << ": q, k, v and ctx must be 16-byte aligned");
  p.out = a.ctx;
  const dim3 grid(unsigned((a.len_q + kTile - 1) / kTile), unsigned(a.heads), unsigned(a.batch));
  dispatch_attention(a.dt, a.head_dim, [&](auto tv, auto dp) {
    using T = decltype(tv);
    launch_kernel(call, attention_forward_kernel<T, decltype(dp)::value>, grid, kThreads, 0, s, p);
  });
}

void launch_attention_backward(const AttentionArgs& a, const void* d_ctx, void* dq, void* dk,
                               void* dv, float* delta, float* d_bias, cudaStream_t s,
                               const Reduction& red) {
  const char* call = "attention_backward";
  AttnParams p = make_params(a, call);
  LS_CHECK_ARG(aligned16(a.q) && aligned16(a.k) && aligned16(a.v) && aligned16(a.ctx) &&
                   aligned16(d_ctx) && aligned16(dq) && aligned16(dk) && aligned16(dv),
               call << ": q, k, v, ctx, d_ctx, dq, dk and dv must be 16-byte aligned");
  p.d_ctx = d_ctx;
  p.dq = dq;
  p.dk = dk;
  p.dv = dv;
  p.delta = delta;
  const int64_t rows = a.batch * a.len_q * a.heads, HD = a.heads * a.head_dim;
  const int64_t k_tiles = (a.len_k + kTile - 1) / kTile;
  // The bias gradient: fused into the key-tile kernel when it owns whole rows (one key tile)
  // and, in deterministic mode, the [B][3 H D] partials fit the workspace; otherwise column
  // sums over the outputs afterwards.
  const bool fused_bias =
      d_bias != nullptr && k_tiles == 1 &&
      (!red.deterministic() || size_t(a.batch) * size_t(3 * HD) <= red.capacity);
  p.d_bias = fused_bias ? d_bias : nullptr;
  p.bias_partials = fused_bias && red.deterministic() ? red.rows(a.batch, 3 * HD, call) : nullptr;
  dispatch_attention(a.dt, a.head_dim, [&](auto tv, auto dp) {
    using T = decltype(tv);
    constexpr int DP = decltype(dp)::value;
    if (k_tiles == 1) {
      constexpr size_t bytes = sizeof(OneTileSmem<T, DP>);
      const dim3 grid(1, unsigned(a.heads), unsigned(a.batch));
      if (a.len_q >= 1 && a.len_q <= kTile) {
        constexpr auto kernel = attention_backward_one_tile_kernel<T, DP, true>;
        allow_dynamic_smem<kernel>(bytes);
        launch_kernel("attention_backward (one key tile)", kernel, grid, kOneTileThreads, bytes, s,
                      p);
      } else {
        constexpr auto kernel = attention_backward_one_tile_kernel<T, DP, false>;
        allow_dynamic_smem<kernel>(bytes);
        launch_kernel("attention_backward (one key tile)", kernel, grid, kOneTileThreads, bytes, s,
                      p);
      }
      return;
    }
    launch_kernel("attention_backward (delta)", attention_delta_kernel<T>,
                  unsigned((rows + 255) / 256), 256, 0, s, p, rows);
    if (k_tiles > 1) {
      const dim3 grid(unsigned(k_tiles), unsigned(a.heads), unsigned(a.batch));
      launch_kernel("attention_backward (keys)", attention_backward_kv_kernel<T, DP>, grid,
                    kThreads, 0, s, p);
    }
    {  // dQ (also with no keys at all: zeros)
      const dim3 grid(unsigned((a.len_q + kTile - 1) / kTile), unsigned(a.heads),
                      unsigned(a.batch));
      launch_kernel("attention_backward (queries)", attention_backward_q_kernel<T, DP>, grid,
                    kThreads, 0, s, p);
    }
  });
  if (d_bias == nullptr) return;
  if (fused_bias) {
    if (p.bias_partials != nullptr)
      launch_sum_partials(p.bias_partials, a.batch, 3 * HD, d_bias, s);
    return;
  }
  launch_bias_grad(dq, d_bias, a.batch * a.len_q, HD, a.ld_q, a.dt, s, red);
  if (a.len_k > 0) {
    launch_bias_grad(dk, d_bias + HD, a.batch * a.len_k, HD, a.ld_k, a.dt, s, red);
    launch_bias_grad(dv, d_bias + 2 * HD, a.batch * a.len_k, HD, a.ld_v, a.dt, s, red);
  }
}

}  // namespace cuda
}  // namespace ls
