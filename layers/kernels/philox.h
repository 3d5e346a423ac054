// Philox4x32-R counter-based generator (Salmon et al., SC'11), usable from host and device
// code, so the CPU reference and the CUDA kernels draw the same dropout masks and backward
// regenerates a mask from (seed, offset, element index) instead of storing it.
//
// Dropout uses R = 7 (kDropoutPhiloxRounds): the Random123 authors found Philox4x32 passing
// TestU01's BigCrush from 7 rounds, and FlashAttention-2's dropout (PyTorch's SDPA) draws with
// 7. R = 10 is Random123's default, chosen with a safety margin for general use; dropout only needs
// its keep flags to be independent draws with the right rate, and the dropout kernels are limited
// by the generator's integer work, so each round saved is time and energy in every step.
//
// Element i of a dropout call keyed by (seed, offset) draws the 16-bit lane (i % 8) of
// dropout_draw(seed, i / 8, offset) = philox4x32<7>(key = seed, counter = {i/8 low, i/8 high,
// offset low, offset high}): lane l is the low (l even) or high (l odd) half of word l / 2. The
// element is kept when its lane is below dropout_keep_threshold(p) = floor((1 - p) 2^16), i.e.
// with probability 1 - p rounded down to a multiple of 2^-16. One Philox call serves 8
// elements (a 32-bit word per element cost the dropout kernels twice the integer work: they
// are issue-bound on it).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define LS_HD __host__ __device__ __forceinline__
#else
#define LS_HD inline
#endif

namespace ls {

struct Philox4 {
  uint32_t v[4];
};

LS_HD uint32_t philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Rounds R of Philox4x32 on counter {ctr_lo64, ctr_hi64} (as four 32-bit words, low first) with
// key key64 (low word first): Random123's philox4x32_R.
template <int R>
LS_HD Philox4 philox4x32(uint64_t key64, uint64_t ctr_lo64, uint64_t ctr_hi64) {
  uint32_t c0 = static_cast<uint32_t>(ctr_lo64), c1 = static_cast<uint32_t>(ctr_lo64 >> 32);
  uint32_t c2 = static_cast<uint32_t>(ctr_hi64), c3 = static_cast<uint32_t>(ctr_hi64 >> 32);
  uint32_t k0 = static_cast<uint32_t>(key64), k1 = static_cast<uint32_t>(key64 >> 32);
  for (int r = 0; r < R; ++r) {
    uint32_t hi0, hi1;
    uint32_t lo0 = philox_mulhilo(0xD2511F53u, c0, &hi0);
    uint32_t lo1 = philox_mulhilo(0xCD9E8D57u, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  Philox4 out;
  out.v[0] = c0; out.v[1] = c1; out.v[2] = c2; out.v[3] = c3;
  return out;
}

// The rounds of every dropout draw (see the top of the file).
constexpr int kDropoutPhiloxRounds = 7;

// The 8 lanes of dropout draw `group` (elements 8 group .. 8 group + 7) at `offset`.
LS_HD Philox4 dropout_draw(uint64_t seed, uint64_t group, uint64_t offset) {
  return philox4x32<kDropoutPhiloxRounds>(seed, group, offset);
}

// Key of one dropout site in one step. The offset must differ between every dropout call of a
// step and between steps: the runtime gives each site its index as `offset` and points
// `stream` at the model's pass counter (in the backend's memory, read by the kernels), so the
// effective offset is offset + (*stream) * kDropoutSitesPerPass. Because the counter is read
// where the kernel runs, a captured CUDA graph draws fresh masks on every replay.
constexpr uint64_t kDropoutSitesPerPass = uint64_t{1} << 16;
struct DropoutKey {
  uint64_t seed = 0;
  uint64_t offset = 0;
  const uint64_t* stream = nullptr;  // null: offset is used as it is
};

LS_HD uint64_t dropout_offset(const DropoutKey& key) {
  return key.stream != nullptr ? key.offset + *key.stream * kDropoutSitesPerPass : key.offset;
}

// 16-bit lanes strictly below this keep the element: floor((1 - p) 2^16), p in [0, 1]. Below
// 2^16 for every p > 0 (p == 0 gives 2^16: every lane is kept).
LS_HD uint32_t dropout_keep_threshold(float p) {
  const double keep = 1.0 - static_cast<double>(p);
  if (!(keep > 0.0)) return 0u;
  const double t = keep * 65536.0;
  return t >= 65536.0 ? 65536u : static_cast<uint32_t>(t);
}

// Lane l (0..7) of one draw.
LS_HD uint32_t dropout_lane(const Philox4& r, int l) {
  return (r.v[l >> 1] >> (16 * (l & 1))) & 0xFFFFu;
}

// The keep flags of the 8 elements of one draw: bit l = lane l below the threshold.
LS_HD uint32_t dropout_keep_bits8(const Philox4& r, uint32_t threshold) {
  uint32_t bits = 0;
  for (int w = 0; w < 4; ++w) {
    bits |= uint32_t((r.v[w] & 0xFFFFu) < threshold) << (2 * w);
    bits |= uint32_t((r.v[w] >> 16) < threshold) << (2 * w + 1);
  }
  return bits;
}

// Whether element i is kept (slow path: one Philox call per element; kernels that handle
// eight consecutive elements call dropout_draw once and use all eight lanes).
LS_HD bool dropout_keep(DropoutKey key, uint64_t i, uint32_t threshold) {
  Philox4 r = dropout_draw(key.seed, i >> 3, dropout_offset(key));
  return dropout_lane(r, int(i & 7)) < threshold;
}

}  // namespace ls
