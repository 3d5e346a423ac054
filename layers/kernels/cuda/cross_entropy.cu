// Label-smoothed cross-entropy (fairseq's label_smoothed_nll_loss), forward and backward,
// never materialising a fp32 [T, V] softmax.
// Forward: one block of 512 threads per row t; the logits are read once. Register path (V up
//   to 32768 for fp16/bf16, 16384 for fp32): thread i keeps the slots of 8 logits starting at
//   (k * 512 + i) * 8 in registers (16-byte loads when V % 8 == 0 and the logits are 16-byte
//   aligned, all issued before any arithmetic; at most 4 slots element by element otherwise);
//   pass 1: block max; pass 2: sum of exp(z - max) (one ex2 per logit), sum of z and z[y]
//   (picked from the registers of the thread holding it) in one block reduction. Longer rows:
//   one pass with an online (max, sum) per thread, rescaled once per 16 logits, merged over
//   the block. Up to 2 blocks per SM. lse = max + log(sum-exp) is saved for every row (padding
//   rows too);
//   non-padding rows add {loss, nll, 1} to sums[3] with fp32 atomics (order not deterministic),
//   or, in deterministic mode, every row writes its three values to scratch and reduce.cu sums
//   them in row order.
//   nll = lse - z[y], smooth = V lse - sum_v z[v],
//   loss = (1 - eps - eps/(V-1)) nll + eps/(V-1) smooth.
// Backward: one block of 256 threads per row, 4 consecutive logits per thread per step (packed
//   when V % 4 == 0): d_logits = grad_scale * (exp(z - lse) - q), q[y] = 1 - eps,
//   q[v != y] = eps/(V-1); rows whose target is padding are written as zeros. Reads the logits
//   once and writes d_logits once (d_logits may alias the logits).
// Forward + backward (training, launch_cross_entropy_forward_backward): on the register path
//   the forward kernel (kGrad) goes on, once every thread has the row's sums, to write its own
//   logits' d_logits from its registers with the backward's expression and the lse it stores
//   (the same bits): the logits are read once instead of twice. Each thread overwrites only
//   logits it has already read, so d_logits may alias the logits. Longer rows: the two kernels.
// Shapes: logits, d_logits [T, V] (dt); targets [T] int32; lse [T], sums [3], grad_scale [1]
// (fp32).
#include <type_traits>

#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

constexpr int kForwardThreads = 512;
constexpr int kBackwardThreads = 256;
constexpr float kLog2e = 1.4426950408889634f;
// The register path holds up to max_slots<T>() slots of 8 logits per thread (32 registers of
// data: 32768 fp16/bf16 logits or 16384 fp32 per block of 512).
template <class T>
constexpr int max_slots() {
  return sizeof(T) == 4 ? 4 : 8;
}

// Sums (a, b, c) over the block; every thread gets the three. scratch: 3 x 32 floats of shared
// memory; the call synchronises the block.
__device__ __forceinline__ float3 block_sum3(float a, float b, float c, float (*scratch)[32]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  a = warp_sum(a);
  b = warp_sum(b);
  c = warp_sum(c);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) {
    scratch[0][warp] = a;
    scratch[1][warp] = b;
    scratch[2][warp] = c;
  }
  __syncthreads();
  a = lane < nwarps ? scratch[0][lane] : 0.f;
  b = lane < nwarps ? scratch[1][lane] : 0.f;
  c = lane < nwarps ? scratch[2][lane] : 0.f;
  return make_float3(warp_sum(a), warp_sum(b), warp_sum(c));
}

// Maximum of the 8 elements of a raw load (16-bit types: pairwise in storage type, exact).
__device__ __forceinline__ float raw_max(const Raw8<float>& r) {
  float m = raw8_get(r, 0);
#pragma unroll
  for (int j = 1; j < 8; ++j) m = fmaxf(m, raw8_get(r, j));
  return m;
}
__device__ __forceinline__ float raw_max(const Raw8<__half>& r) {
  const __half2* h = reinterpret_cast<const __half2*>(r.w);
  __half2 m = __hmax2(__hmax2(h[0], h[1]), __hmax2(h[2], h[3]));
  return fmaxf(__low2float(m), __high2float(m));
}
__device__ __forceinline__ float raw_max(const Raw8<__nv_bfloat16>& r) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(r.w);
  __nv_bfloat162 m = __hmax2(__hmax2(h[0], h[1]), __hmax2(h[2], h[3]));
  return fmaxf(__low2float(m), __high2float(m));
}

// A slot of 8 logits that are all -inf (the bit pattern repeated: no per-element packing).
template <class T>
__device__ __forceinline__ Raw8<T> neg_inf_raw8() {
  constexpr uint32_t kWord = sizeof(T) == 4                          ? 0xFF800000u
                             : std::is_same<T, __nv_bfloat16>::value ? 0xFF80FF80u
                                                                     : 0xFC00FC00u;
  Raw8<T> r;
#pragma unroll
  for (int q = 0; q < int(2 * sizeof(T)); ++q) r.w[q] = kWord;
  return r;
}

// Slot of 8 logits starting at v0 (kVec: a 16-byte load; else element by element; logits at
// or beyond vocab read as -inf).
template <class T, bool kVec>
__device__ __forceinline__ Raw8<T> load_slot(const T* z, int64_t v0, int64_t vocab) {
  if (kVec) return v0 < vocab ? load_raw8(z, v0, vocab, true) : neg_inf_raw8<T>();
  return raw8_gather(z, v0, vocab, from_f32<T>(-INFINITY));
}

// Starts fetching targets[t] into L1 before the row's loads: the value itself is needed only
// after pass 1, and a load kept in a register that long is sunk by the compiler (register
// pressure) next to its use, where it would stall the block for a full memory latency.
__device__ __forceinline__ void prefetch_l1(const void* p) {
  asm volatile("prefetch.global.L1 [%0];" : : "l"(p));
}

// Logit j (0..7, a runtime value) of a slot: the target's logit, taken from registers by the
// one thread that holds it (no dependent load of z[y]).
template <class T>
__device__ __forceinline__ float slot_pick(const Raw8<T>& r, int j) {
  float x[8];
  unpack8(r, x);
  float out = x[0];
#pragma unroll
  for (int i = 1; i < 8; ++i)
    if (i == j) out = x[i];
  return out;
}

// Adds exp(x - max) (as ex2(x log2e - max log2e), mL = max log2e, one ex2 per logit) and x
// over the slot's logits below vocab.
template <class T, bool kVec>
__device__ __forceinline__ void slot_exp_sum(const Raw8<T>& r, int64_t v0, int64_t vocab, float mL,
                                             float& s, float& sz) {
  if (kVec && v0 >= vocab) return;
  float x[8];
  unpack8(r, x);
  if (kVec) {
    float e[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) e[j] = fast_exp2(fmaf(x[j], kLog2e, -mL));
    s += ((e[0] + e[1]) + (e[2] + e[3])) + ((e[4] + e[5]) + (e[6] + e[7]));
    sz += ((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7]));
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (v0 + j >= vocab) break;
      s += fast_exp2(fmaf(x[j], kLog2e, -mL));
      sz += x[j];
    }
  }
}

// The row's lse from its maximum and its sum of exp(z - max): one expression for the value
// stored and the one the fused backward uses.
__device__ __forceinline__ float row_lse_of(float mx, float sum_exp) {
  return mx + logf(sum_exp);
}

// d_logits[v] = scale * (exp(z[v] - lse) - q[v]), q[y] = 1 - eps, q[v != y] = eps / (V - 1):
// the backward's expression, shared by its kernel and the fused forward (the same bits).
struct LogitGrad {
  float scale, lse, q_target, eps_other;
  int32_t y;
  __device__ LogitGrad(float scale_, float lse_, float eps, int64_t vocab, int32_t y_)
      : scale(scale_), lse(lse_), q_target(1.f - eps), eps_other(eps / float(vocab - 1)), y(y_) {}
  __device__ __forceinline__ float operator()(float z, int64_t v) const {
    return scale * (expf(z - lse) - (v == y ? q_target : eps_other));
  }
};

// Thread 0 of the block: lse[t] = row_lse, and the row's {loss, nll, 1} into sums or partials.
__device__ __forceinline__ void finish_row(int64_t t, float row_lse, float total_z, int32_t y,
                                           float zy, float* lse, float* sums, int64_t vocab,
                                           int32_t padding_idx, float eps, float* partials) {
  lse[t] = row_lse;
  float row[3] = {0.f, 0.f, 0.f};
  if (y != padding_idx) {
    float eps_other = eps / float(vocab - 1);
    float w_nll = 1.f - eps - eps_other;
    float nll = row_lse - zy;
    float smooth = float(vocab) * row_lse - total_z;
    row[0] = w_nll * nll + eps_other * smooth;
    row[1] = nll;
    row[2] = 1.f;
  }
  if (partials != nullptr) {  // deterministic: per-row values, summed in order by reduce.cu
    for (int k = 0; k < 3; ++k) partials[3 * t + k] = row[k];
  } else if (y != padding_idx) {
    for (int k = 0; k < 3; ++k) atomicAdd(sums + k, row[k]);
  }
}

// Register path: thread i holds the kSlots slots of 8 logits starting at (k * 512 + i) * 8 of
// row t, all loaded before any arithmetic. Pass 1: row maximum (block max); pass 2: sum of
// exp(z - max), sum of z and z[y] from the registers; one block reduction of the three.
// kVec: vocab % 8 == 0 and logits 16-byte aligned (16-byte loads); a separate instantiation
// from the element-by-element one so that the vector path has no per-element packing.
// kGrad: also d_logits = grad_scale * (exp(z - lse) - q) from the registers (see the header);
// logits is then not __restrict__, as d_logits may alias it.
template <class T, int kSlots, bool kVec, bool kGrad>
__global__ void __launch_bounds__(kForwardThreads, 2)
    cross_entropy_forward_regs_kernel(const T* logits, const int32_t* __restrict__ targets,
                                      float* lse, float* sums, int64_t vocab, int32_t padding_idx,
                                      float eps, float* partials, const float* grad_scale,
                                      T* d_logits) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  __shared__ float scratch[3][32];
  const int64_t t = blockIdx.x;
  const T* z = logits + t * vocab;
  prefetch_l1(targets + t);
  Raw8<T> v[kSlots];
#pragma unroll
  for (int k = 0; k < kSlots; ++k)
    v[k] = load_slot<T, kVec>(z, (int64_t(k) * kForwardThreads + threadIdx.x) * 8, vocab);
  float m = -INFINITY;
#pragma unroll
  for (int k = 0; k < kSlots; ++k) m = fmaxf(m, raw_max(v[k]));
  const float mx = block_max(m, &scratch[0][0]);
  const float mL = mx == -INFINITY ? 0.f : mx * kLog2e;
  float s = 0.f, sz = 0.f, zy = 0.f;
#pragma unroll
  for (int k = 0; k < kSlots; ++k)
    slot_exp_sum<T, kVec>(v[k], (int64_t(k) * kForwardThreads + threadIdx.x) * 8, vocab, mL, s, sz);
  const int32_t y = targets[t];
  // z[y] from the thread holding it: slot y / 8 = k * 512 + threadIdx.x.
  if (y >= 0 && y < vocab && (y >> 3) % kForwardThreads == int(threadIdx.x)) {
    const int ky = (y >> 3) / kForwardThreads;
#pragma unroll
    for (int k = 0; k < kSlots; ++k)
      if (k == ky) zy = slot_pick(v[k], y & 7);
  }
  const float3 tot = block_sum3(s, sz, zy, scratch);
  const float row_lse = row_lse_of(mx, tot.x);
  if (threadIdx.x == 0)
    finish_row(t, row_lse, tot.y, y, tot.z, lse, sums, vocab, padding_idx, eps, partials);
  if (!kGrad) return;
  const bool pad = y == padding_idx;
  const LogitGrad grad(grad_scale[0], row_lse, eps, vocab, y);
  T* dz = d_logits + t * vocab;
#pragma unroll
  for (int k = 0; k < kSlots; ++k) {
    const int64_t v0 = (int64_t(k) * kForwardThreads + threadIdx.x) * 8;
    if (v0 >= vocab) continue;
    float x[8];
    unpack8(v[k], x);
#pragma unroll
    for (int j = 0; j < 8; ++j) x[j] = pad ? 0.f : grad(x[j], v0 + j);
    store8(dz, v0, vocab, kVec && v0 + 8 <= vocab, x);
  }
}

// Rows longer than the register path: one pass with an online (max, sum) per thread, rescaled
// once per 2 slots (16 logits, both loaded before the arithmetic), then merged over the block.
template <class T, bool kVec>
__global__ void __launch_bounds__(kForwardThreads)
    cross_entropy_forward_online_kernel(const T* __restrict__ logits,
                                        const int32_t* __restrict__ targets, float* lse,
                                        float* sums, int64_t vocab, int32_t padding_idx, float eps,
                                        float* partials) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  __shared__ float scratch[3][32];
  const int64_t t = blockIdx.x;
  const T* z = logits + t * vocab;
  const int32_t y = targets[t];  // needed inside the loop: loaded once, before it
  const int64_t ybase = y >= 0 && y < vocab ? int64_t(y & ~7) : -1;  // slot holding z[y]
  constexpr int64_t kStep = int64_t(kForwardThreads) * 8;
  float m = -INFINITY, s = 0.f, sz = 0.f, zy = 0.f;
  for (int64_t base = int64_t(threadIdx.x) * 8; base < vocab; base += 2 * kStep) {
    const Raw8<T> v0 = load_slot<T, kVec>(z, base, vocab);
    const Raw8<T> v1 = load_slot<T, kVec>(z, base + kStep, vocab);
    const float mn = fmaxf(m, fmaxf(raw_max(v0), raw_max(v1)));
    // mn == -inf: every logit so far is -inf; exp terms are 0 (mL = 0 keeps them so).
    const float mL = mn == -INFINITY ? 0.f : mn * kLog2e;
    if (mn != m) s *= fast_exp2((m - mn) * kLog2e);  // m == -inf: s is 0 and stays 0
    m = mn;
    slot_exp_sum<T, kVec>(v0, base, vocab, mL, s, sz);
    slot_exp_sum<T, kVec>(v1, base + kStep, vocab, mL, s, sz);
    if (base == ybase) zy = slot_pick(v0, y & 7);
    if (base + kStep == ybase) zy = slot_pick(v1, y & 7);
  }
  const float mx = block_max(m, &scratch[0][0]);
  const float scaled = m == -INFINITY ? 0.f : s * fast_exp2((m - mx) * kLog2e);
  const float3 tot = block_sum3(scaled, sz, zy, scratch);
  if (threadIdx.x == 0)
    finish_row(t, row_lse_of(mx, tot.x), tot.y, y, tot.z, lse, sums, vocab, padding_idx, eps,
               partials);
}

template <class T>
__global__ void cross_entropy_backward_kernel(const T* logits, const int32_t* __restrict__ targets,
                                              const float* __restrict__ lse,
                                              const float* __restrict__ grad_scale, T* d_logits,
                                              int64_t vocab, int32_t padding_idx, float eps) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  int64_t t = blockIdx.x;
  int32_t y = targets[t];
  bool pad = y == padding_idx;
  const LogitGrad grad(grad_scale[0], lse[t], eps, vocab, y);
  const T* z = logits + t * vocab;
  T* dz = d_logits + t * vocab;
  bool aligned = vocab % 4 == 0 && pack_aligned<T>(logits) && pack_aligned<T>(d_logits);
  for (int64_t v0 = 4 * int64_t(threadIdx.x); v0 < vocab; v0 += 4 * int64_t(blockDim.x)) {
    bool vec = aligned && v0 + 4 <= vocab;
    float x[4];
    if (pad) {
#pragma unroll
      for (int j = 0; j < 4; ++j) x[j] = 0.f;
    } else {
      load4(z, v0, vocab, vec, x);
#pragma unroll
      for (int j = 0; j < 4; ++j) x[j] = grad(x[j], v0 + j);
    }
    store4(dz, v0, vocab, vec, x);
  }
}

// The register path's slots of 8 logits per thread for a row of `vocab` logits.
int64_t forward_slots(int64_t vocab) {
  constexpr int64_t kPerSlot = int64_t(kForwardThreads) * 8;
  return (vocab + kPerSlot - 1) / kPerSlot;
}

// Whether a row of `vocab` logits fits the forward's register path (the element-by-element
// path keeps at most 4 slots: beyond, it would spill).
template <class T>
bool fits_registers(int64_t vocab, bool vec) {
  return forward_slots(vocab) <= (vec ? max_slots<T>() : 4);
}

// Launches the forward's register-path kernel (kGrad: with the backward fused), for a row that
// fits_registers.
template <class T, bool kGrad>
void launch_forward_regs(const T* z, const int32_t* targets, float* lse, float* sums, int64_t rows,
                         int64_t vocab, int32_t padding_idx, float eps, bool vec, float* partials,
                         const float* grad_scale, T* d_logits, cudaStream_t s) {
  const int64_t slots = forward_slots(vocab);
  const char* name = kGrad ? "cross_entropy_forward_backward" : "cross_entropy_forward";
  auto regs = [&](auto slots_c, auto vec_c) {
    launch_kernel(name,
                  cross_entropy_forward_regs_kernel<T, decltype(slots_c)::value,
                                                    decltype(vec_c)::value, kGrad>,
                  unsigned(rows), kForwardThreads, 0, s, z, targets, lse, sums, vocab, padding_idx,
                  eps, partials, grad_scale, d_logits);
  };
  using VecOn = std::true_type;
  using VecOff = std::false_type;
  if (vec) {
    if (slots <= 1)
      regs(std::integral_constant<int, 1>{}, VecOn{});
    else if (slots <= 2)
      regs(std::integral_constant<int, 2>{}, VecOn{});
    else if (slots <= 4)
      regs(std::integral_constant<int, 4>{}, VecOn{});
    else if constexpr (max_slots<T>() >= 8)
      regs(std::integral_constant<int, 8>{}, VecOn{});
    return;
  }
  if (slots <= 1)
    regs(std::integral_constant<int, 1>{}, VecOff{});
  else if (slots <= 2)
    regs(std::integral_constant<int, 2>{}, VecOff{});
  else
    regs(std::integral_constant<int, 4>{}, VecOff{});
}

}  // namespace

void launch_cross_entropy_forward(const void* logits, const int32_t* targets, float* lse,
                                  float* sums, int64_t rows, int64_t vocab, int32_t padding_idx,
                                  float eps, DType dt, cudaStream_t s, const Reduction& red) {
  if (rows == 0) return;
  float* partials = red.deterministic() ? red.rows(rows, 3, "cross_entropy_forward") : nullptr;
  const bool vec = vocab % 8 == 0 && aligned16(logits);
  dispatch_dtype(dt, "cross_entropy_forward", [&](auto tv) {
    using T = decltype(tv);
    const T* z = static_cast<const T*>(logits);
    if (fits_registers<T>(vocab, vec))
      launch_forward_regs<T, false>(z, targets, lse, sums, rows, vocab, padding_idx, eps, vec,
                                    partials, nullptr, nullptr, s);
    else if (vec)
      launch_kernel("cross_entropy_forward", cross_entropy_forward_online_kernel<T, true>,
                    unsigned(rows), kForwardThreads, 0, s, z, targets, lse, sums, vocab,
                    padding_idx, eps, partials);
    else
      launch_kernel("cross_entropy_forward", cross_entropy_forward_online_kernel<T, false>,
                    unsigned(rows), kForwardThreads, 0, s, z, targets, lse, sums, vocab,
                    padding_idx, eps, partials);
  });
  if (partials != nullptr) launch_sum_partials(partials, rows, 3, sums, s);
}

void launch_cross_entropy_forward_backward(const void* logits, const int32_t* targets, float* lse,
                                           float* sums, const float* grad_scale_dev, void* d_logits,
                                           int64_t rows, int64_t vocab, int32_t padding_idx,
                                           float eps, DType dt, cudaStream_t s,
                                           const Reduction& red) {
  if (rows == 0) return;
  const bool vec = vocab % 8 == 0 && aligned16(logits) && aligned16(d_logits);
  bool fused = false;
  float* partials = nullptr;
  dispatch_dtype(dt, "cross_entropy_forward_backward", [&](auto tv) {
    using T = decltype(tv);
    fused = fits_registers<T>(vocab, vec);
    if (!fused) return;  // the two kernels, below
    partials = red.deterministic() ? red.rows(rows, 3, "cross_entropy_forward_backward") : nullptr;
    launch_forward_regs<T, true>(static_cast<const T*>(logits), targets, lse, sums, rows, vocab,
                                 padding_idx, eps, vec, partials, grad_scale_dev,
                                 static_cast<T*>(d_logits), s);
  });
  if (fused) {
    if (partials != nullptr) launch_sum_partials(partials, rows, 3, sums, s);
    return;
  }
  launch_cross_entropy_forward(logits, targets, lse, sums, rows, vocab, padding_idx, eps, dt, s,
                               red);
  launch_cross_entropy_backward(logits, targets, lse, grad_scale_dev, d_logits, rows, vocab,
                                padding_idx, eps, dt, s);
}

void launch_cross_entropy_backward(const void* logits, const int32_t* targets, const float* lse,
                                   const float* grad_scale_dev, void* d_logits, int64_t rows,
                                   int64_t vocab, int32_t padding_idx, float eps, DType dt,
                                   cudaStream_t s) {
  if (rows == 0) return;
  dispatch_dtype(dt, "cross_entropy_backward", [&](auto tv) {
    using T = decltype(tv);
    launch_kernel("cross_entropy_backward", cross_entropy_backward_kernel<T>, unsigned(rows),
                  kBackwardThreads, 0, s, static_cast<const T*>(logits), targets, lse,
                  grad_scale_dev, static_cast<T*>(d_logits), vocab, padding_idx, eps);
  });
}

}  // namespace cuda
}  // namespace ls
