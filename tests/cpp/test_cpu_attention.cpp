// CPU reference attention kernels: split/merge heads (a permutation and its inverse, checked
// element by element, as inverses and as adjoints) and the masked softmax with its fused
// dropout backward (finite differences in double, masks, fully masked rows, fp32 vs fp64).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "layers/kernels/backends.h"
#include "test_util.h"

using ls::DropoutKey;
using ls::DType;
using namespace ls::test;

namespace {

// Central differences in double (see numeric_gradient): 1e-6 relative is far above their error.
constexpr double kGradTol = 1e-6;

}  // namespace

TEST_CASE("split_heads moves [B*L, n*H*D] (+ bias) to [n, B, H, L, D]; merge_heads inverts it") {
  auto ops = ls::make_cpu_ops();
  const int64_t n = 3, batch = 2, len = 4, heads = 2, head_dim = 3;
  const int64_t width = n * heads * head_dim, total = batch * len * width;
  const auto in = random_vector<double>(total, 200);
  const auto bias = random_vector<double>(width, 201);
  std::vector<double> split(total), split_bias(total), merged(total);
  poison(split);
  poison(merged);
  ops->split_heads(in.data(), nullptr, split.data(), n, batch, len, heads, head_dim, DType::F64);
  ops->split_heads(in.data(), bias.data(), split_bias.data(), n, batch, len, heads, head_dim,
                   DType::F64);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t l = 0; l < len; ++l)
          for (int64_t d = 0; d < head_dim; ++d) {
            const int64_t col = i * heads * head_dim + h * head_dim + d;
            const int64_t src = (b * len + l) * width + col;
            const int64_t dst = (((i * batch + b) * heads + h) * len + l) * head_dim + d;
            CHECK(split[dst] == in[src]);
            CHECK(split_bias[dst] == in[src] + bias[col]);
          }
  ops->merge_heads(split.data(), merged.data(), n, batch, len, heads, head_dim, DType::F64);
  CHECK(merged == in);  // merge(split(x)) == x bitwise
  std::vector<double> resplit(total);
  ops->split_heads(merged.data(), nullptr, resplit.data(), n, batch, len, heads, head_dim,
                   DType::F64);
  CHECK(resplit == split);  // split(merge(y)) == y
}

TEST_CASE("merge_heads is the adjoint of split_heads: <split(x), y> == <x, merge(y)>") {
  auto ops = ls::make_cpu_ops();
  const int64_t n = 2, batch = 3, len = 2, heads = 4, head_dim = 2;
  const int64_t total = n * batch * len * heads * head_dim;
  const auto x = random_vector<double>(total, 210), y = random_vector<double>(total, 211);
  std::vector<double> split_x(total), merge_y(total);
  ops->split_heads(x.data(), nullptr, split_x.data(), n, batch, len, heads, head_dim, DType::F64);
  ops->merge_heads(y.data(), merge_y.data(), n, batch, len, heads, head_dim, DType::F64);
  // The same products summed in another order.
  CHECK(dot(split_x, y) == doctest::Approx(dot(x, merge_y)).epsilon(1e-14));
}

TEST_CASE("softmax forward: rows sum to 1 over visible keys, masked keys and rows are 0") {
  auto ops = ls::make_cpu_ops();
  const int64_t batch = 2, heads = 2, lq = 3, lk = 4;
  const int64_t total = batch * heads * lq * lk;
  const auto scores = random_vector<double>(total, 220, -3, 3);
  // Batch 0 pads keys 0 and 3; with the causal mask, query 0 of batch 0 sees no key at all.
  const std::vector<uint8_t> key_pad = {1, 0, 0, 1, /**/ 0, 0, 0, 0};
  std::vector<double> probs(total);
  poison(probs);
  ops->softmax_forward(scores.data(), probs.data(), key_pad.data(), true, batch, heads, lq, lk,
                       DType::F64);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t q = 0; q < lq; ++q) {
        const double* s = &scores[((b * heads + h) * lq + q) * lk];
        const double* pr = &probs[((b * heads + h) * lq + q) * lk];
        double denom = 0;
        for (int64_t k = 0; k < lk; ++k)
          if (!key_pad[b * lk + k] && k <= q) denom += std::exp(s[k]);
        for (int64_t k = 0; k < lk; ++k) {
          const bool visible = !key_pad[b * lk + k] && k <= q;
          CAPTURE(b);
          CAPTURE(q);
          CAPTURE(k);
          if (!visible || denom == 0)
            CHECK(pr[k] == 0.0);
          else
            CHECK(pr[k] == doctest::Approx(std::exp(s[k]) / denom).epsilon(1e-14));
        }
      }
  // The fully masked row exists in this setup (batch 0, query 0).
  for (int64_t k = 0; k < lk; ++k) CHECK(probs[k] == 0.0);

  // probs may alias scores.
  std::vector<double> in_place = scores;
  ops->softmax_forward(in_place.data(), in_place.data(), key_pad.data(), true, batch, heads, lq, lk,
                       DType::F64);
  CHECK(in_place == probs);
}

// loss = <W, dropout(softmax(S))>; softmax_backward(W, probs) is dloss/dS with the dropout
// regenerated from the same key that dropout_forward used on probs.
TEST_CASE("softmax backward with fused dropout matches finite differences under masks") {
  auto ops = ls::make_cpu_ops();
  const int64_t batch = 2, heads = 3, lq = 4, lk = 5;
  const int64_t rows = batch * heads * lq, total = rows * lk;
  const std::vector<uint8_t> key_pad = {0, 0, 1, 0, 1, /**/ 1, 1, 1, 1, 1};  // batch 1: all
  struct Case {
    bool causal;
    const uint8_t* pad;
    float p;
  };
  for (Case c : {Case{false, nullptr, 0.f}, Case{true, nullptr, 0.3f},
                 Case{false, key_pad.data(), 0.3f}, Case{true, key_pad.data(), 0.1f}}) {
    CAPTURE(c.causal);
    CAPTURE(c.pad != nullptr);
    CAPTURE(c.p);
    const DropoutKey key{77, 9};
    auto scores = random_vector<double>(total, 230, -2, 2);
    const auto weights = random_vector<double>(total, 231);
    std::vector<double> probs(total), dropped(total);
    auto loss = [&]() {
      ops->softmax_forward(scores.data(), probs.data(), c.pad, c.causal, batch, heads, lq, lk,
                           DType::F64);
      ops->dropout_forward(probs.data(), dropped.data(), total, c.p, key, DType::F64);
      return dot(weights, dropped);
    };
    loss();
    std::vector<double> d_scores(total);
    poison(d_scores);
    ops->softmax_backward(weights.data(), probs.data(), d_scores.data(), rows, lk, c.p, key,
                          DType::F64);
    CHECK(gradient_error(scores, loss, d_scores) < kGradTol);
    // Masked scores get exactly zero gradient.
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t q = 0; q < lq; ++q)
          for (int64_t k = 0; k < lk; ++k) {
            const bool masked = (c.pad && c.pad[b * lk + k]) || (c.causal && k > q);
            if (masked) CHECK(d_scores[((b * heads + h) * lq + q) * lk + k] == 0.0);
          }
  }
}

TEST_CASE("softmax in fp32 agrees with fp64") {
  auto ops = ls::make_cpu_ops();
  const int64_t batch = 2, heads = 2, lq = 8, lk = 8, total = batch * heads * lq * lk;
  const auto scores = random_vector<double>(total, 240, -5, 5);
  const auto d_dropped = random_vector<double>(total, 241);
  const std::vector<uint8_t> key_pad = {0, 0, 0, 0, 0, 0, 1, 1, /**/ 0, 0, 0, 0, 0, 0, 0, 0};
  const DropoutKey key{3, 4};
  std::vector<double> probs(total), d_scores(total);
  ops->softmax_forward(scores.data(), probs.data(), key_pad.data(), true, batch, heads, lq, lk,
                       DType::F64);
  ops->softmax_backward(d_dropped.data(), probs.data(), d_scores.data(), batch * heads * lq, lk,
                        0.1f, key, DType::F64);
  const auto scores32 = convert<float>(scores), d_dropped32 = convert<float>(d_dropped);
  std::vector<float> probs32(total), d_scores32(total);
  ops->softmax_forward(scores32.data(), probs32.data(), key_pad.data(), true, batch, heads, lq, lk,
                       DType::F32);
  ops->softmax_backward(d_dropped32.data(), probs32.data(), d_scores32.data(), batch * heads * lq,
                        lk, 0.1f, key, DType::F32);
  // Scores up to |5| rounded to fp32 (u = 6e-8) move exp() by ~5 u relative; 8-term sums add
  // ~8 u: well under 1e-5.
  CHECK(rel_error(probs32, probs) < 1e-5);
  CHECK(rel_error(d_scores32, d_scores) < 1e-5);
}

TEST_CASE("attention kernels reject bad arguments") {
  auto ops = ls::make_cpu_ops();
  std::vector<double> a(24), b(24);
  CHECK(status_of([&] {
          ops->split_heads(a.data(), nullptr, a.data(), 1, 2, 3, 2, 2, DType::F64);
        }) == LS_ERR_INVALID_ARGUMENT);  // in and out alias
  CHECK(status_of([&] { ops->merge_heads(a.data(), b.data(), 1, -2, 3, 2, 2, DType::F64); }) ==
        LS_ERR_INVALID_ARGUMENT);
  CHECK(status_of([&] {
          ops->softmax_forward(nullptr, b.data(), nullptr, false, 1, 2, 3, 4, DType::F64);
        }) == LS_ERR_INVALID_ARGUMENT);
  CHECK(status_of([&] {
          ops->softmax_backward(a.data(), a.data(), b.data(), 6, 4, 1.5f, DropoutKey{}, DType::F64);
        }) == LS_ERR_INVALID_ARGUMENT);
  CHECK(status_of([&] {
          ops->softmax_forward(a.data(), b.data(), nullptr, false, 1, 2, 3, 4, DType::F16);
        }) == LS_ERR_UNSUPPORTED);
}

namespace {

// The unfused attention core of the layers (split heads, batched GEMMs, masked softmax,
// dropout, merge heads) in F64, over the same token-major buffers as AttentionArgs: the
// reference the fused kernels are checked against.
struct UnfusedAttention {
  ls::Ops& ops;
  const ls::AttentionArgs& a;
  int64_t hd() const { return a.heads * a.head_dim; }
  // Gathers one projection ([B*L rows of ld], head columns from `col0`) into [B, H, L, D].
  std::vector<double> heads_of(const void* p, int64_t ld, int64_t len) {
    const int64_t rows = a.batch * len;
    std::vector<double> packed(rows * hd()), out(rows * hd());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < hd(); ++c)
        packed[r * hd() + c] = static_cast<const double*>(p)[r * ld + c];
    ops.split_heads(packed.data(), nullptr, out.data(), 1, a.batch, len, a.heads, a.head_dim,
                    DType::F64);
    return out;
  }
  void scatter(const std::vector<double>& heads, void* p, int64_t ld, int64_t len) {
    const int64_t rows = a.batch * len;
    std::vector<double> packed(rows * hd());
    ops.merge_heads(heads.data(), packed.data(), 1, a.batch, len, a.heads, a.head_dim, DType::F64);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < hd(); ++c) static_cast<double*>(p)[r * ld + c] = packed[r * hd() + c];
  }
  void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double* x, int64_t ldx,
            int64_t sx, const double* y, int64_t ldy, int64_t sy, double* z, int64_t ldz,
            int64_t sz, float alpha) {
    ls::GemmArgs g;
    g.trans_a = ta;
    g.trans_b = tb;
    g.m = m;
    g.n = n;
    g.k = k;
    g.a = x;
    g.lda = ldx;
    g.stride_a = sx;
    g.b = y;
    g.ldb = ldy;
    g.stride_b = sy;
    g.c = z;
    g.ldc = ldz;
    g.stride_c = sz;
    g.batch = a.batch * a.heads;
    g.alpha = alpha;
    g.ab_type = g.c_type = DType::F64;
    ops.gemm(g);
  }
  // ctx, and (when d_ctx is non-null) dq, dk, dv, all token-major like a's buffers.
  void run(void* ctx, const void* d_ctx, void* dq, void* dk, void* dv) {
    const int64_t Lq = a.len_q, Lk = a.len_k, D = a.head_dim, BH = a.batch * a.heads;
    auto q = heads_of(a.q, a.ld_q, Lq), k = heads_of(a.k, a.ld_k, Lk),
         v = heads_of(a.v, a.ld_v, Lk);
    std::vector<double> probs(BH * Lq * Lk), dropped(BH * Lq * Lk), o(BH * Lq * D);
    gemm(false, true, Lq, Lk, D, q.data(), D, Lq * D, k.data(), D, Lk * D, probs.data(), Lk,
         Lq * Lk, a.scale);
    ops.softmax_forward(probs.data(), probs.data(), a.key_pad, a.causal, a.batch, a.heads, Lq, Lk,
                        DType::F64);
    ops.dropout_forward(probs.data(), dropped.data(), probs.size(), a.dropout, a.key, DType::F64);
    gemm(false, false, Lq, D, Lk, dropped.data(), Lk, Lq * Lk, v.data(), D, Lk * D, o.data(), D,
         Lq * D, 1.f);
    scatter(o, ctx, a.ld_ctx, Lq);
    if (d_ctx == nullptr) return;
    auto go = heads_of(d_ctx, a.ld_ctx, Lq);
    std::vector<double> gq(q.size()), gk(k.size()), gv(v.size()), dp(probs.size());
    gemm(true, false, Lk, D, Lq, dropped.data(), Lk, Lq * Lk, go.data(), D, Lq * D, gv.data(), D,
         Lk * D, 1.f);
    gemm(false, true, Lq, Lk, D, go.data(), D, Lq * D, v.data(), D, Lk * D, dp.data(), Lk, Lq * Lk,
         1.f);
    ops.softmax_backward(dp.data(), probs.data(), dp.data(), BH * Lq, Lk, a.dropout, a.key,
                         DType::F64);
    gemm(false, false, Lq, D, Lk, dp.data(), Lk, Lq * Lk, k.data(), D, Lk * D, gq.data(), D, Lq * D,
         a.scale);
    gemm(true, false, Lk, D, Lq, dp.data(), Lk, Lq * Lk, q.data(), D, Lq * D, gk.data(), D, Lk * D,
         a.scale);
    scatter(gq, dq, a.ld_q, Lq);
    scatter(gk, dk, a.ld_k, Lk);
    scatter(gv, dv, a.ld_v, Lk);
  }
};

// Only the head columns of a token-major buffer (the rest of a packed row is someone else's).
std::vector<double> head_columns(const std::vector<double>& buf, const double* p, int64_t rows,
                                 int64_t ld, int64_t width) {
  std::vector<double> out;
  const int64_t off = p - buf.data();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < width; ++c) out.push_back(buf[off + r * ld + c]);
  return out;
}

}  // namespace

TEST_CASE("fused attention equals the unfused path (split, GEMMs, softmax, dropout, merge)") {
  auto ops = ls::make_cpu_ops();
  struct Shape {
    const char* name;
    bool cross, causal, pad;
    int64_t batch, heads, lq, lk, head_dim;
    float dropout;
  };
  const Shape shapes[] = {
      {"self causal padded dropout", false, true, true, 2, 2, 5, 5, 3, 0.3f},
      {"self no masks no dropout", false, false, false, 3, 1, 4, 4, 8, 0.f},
      {"cross padded dropout", true, false, true, 2, 3, 3, 7, 2, 0.25f},
  };
  uint64_t seed = 300;
  for (const Shape& s : shapes) {
    CAPTURE(s.name);
    const int64_t hd = s.heads * s.head_dim, Tq = s.batch * s.lq, Tk = s.batch * s.lk;
    // Packed like the layer's projections: [T, 3hd] for self, [Tq, hd] + [Tk, 2hd] for cross.
    std::vector<double> qbuf, kvbuf;
    ls::AttentionArgs a;
    if (!s.cross) {
      qbuf = random_vector<double>(Tq * 3 * hd, seed++, -2, 2);
      a.q = qbuf.data();
      a.k = qbuf.data() + hd;
      a.v = qbuf.data() + 2 * hd;
      a.ld_q = a.ld_k = a.ld_v = 3 * hd;
    } else {
      qbuf = random_vector<double>(Tq * hd, seed++, -2, 2);
      kvbuf = random_vector<double>(Tk * 2 * hd, seed++, -2, 2);
      a.q = qbuf.data();
      a.k = kvbuf.data();
      a.v = kvbuf.data() + hd;
      a.ld_q = hd;
      a.ld_k = a.ld_v = 2 * hd;
    }
    // Row 0 of batch 0 pads its first and last keys; with the causal mask query 0 then sees
    // no key at all (an all-zero row).
    std::vector<uint8_t> pad(s.batch * s.lk, 0);
    if (s.pad) pad[0] = pad[s.lk - 1] = 1;
    a.key_pad = s.pad ? pad.data() : nullptr;
    a.causal = s.causal;
    a.batch = s.batch;
    a.heads = s.heads;
    a.len_q = s.lq;
    a.len_k = s.lk;
    a.head_dim = s.head_dim;
    a.scale = 0.7f;
    a.dropout = s.dropout;
    a.key = DropoutKey{7, 3, nullptr};
    a.dt = DType::F64;
    const int64_t ld_ctx = hd + 2;  // a padded row: columns beyond hd stay untouched
    std::vector<double> ctx(Tq * ld_ctx, 42.0), ctx_ref(Tq * ld_ctx, 42.0);
    std::vector<double> lse(s.batch * s.heads * s.lq), delta(lse.size());
    poison(lse);
    poison(delta);
    a.ctx = ctx.data();
    a.ld_ctx = ld_ctx;
    a.lse = lse.data();
    ops->attention_forward(a);
    UnfusedAttention ref{*ops, a};
    const auto d_ctx = random_vector<double>(Tq * ld_ctx, seed++);
    std::vector<double> dq(qbuf.size(), 42.0), dkv(s.cross ? kvbuf.size() : qbuf.size(), 42.0);
    std::vector<double> dq_ref = dq, dkv_ref = dkv;
    double* dk = s.cross ? dkv.data() : dq.data() + hd;
    double* dv = s.cross ? dkv.data() + hd : dq.data() + 2 * hd;
    double* dk_ref = s.cross ? dkv_ref.data() : dq_ref.data() + hd;
    double* dv_ref = s.cross ? dkv_ref.data() + hd : dq_ref.data() + 2 * hd;
    // The bias gradient accumulates (+=) onto what is there.
    std::vector<double> d_bias(3 * hd, 0.5), d_bias_ref(3 * hd, 0.5);
    ops->attention_backward(a, d_ctx.data(), dq.data(), dk, dv, delta.data(), d_bias.data());
    ref.run(ctx_ref.data(), d_ctx.data(), dq_ref.data(), dk_ref, dv_ref);
    // d_bias = 0.5 + column sums of the reference dq | dk | dv.
    for (int64_t t = 0; t < Tq; ++t)
      for (int64_t c = 0; c < hd; ++c) d_bias_ref[c] += dq_ref[t * a.ld_q + c];
    for (int64_t t = 0; t < Tk; ++t)
      for (int64_t c = 0; c < hd; ++c) {
        d_bias_ref[hd + c] += dk_ref[t * a.ld_k + c];
        d_bias_ref[2 * hd + c] += dv_ref[t * a.ld_v + c];
      }
    CHECK(rel_error(d_bias, d_bias_ref) < 1e-12);
    // The same sums in another order, in double: 1e-12 relative.
    CHECK(rel_error(ctx, ctx_ref) < 1e-12);
    CHECK(rel_error(head_columns(dq, dq.data(), Tq, a.ld_q, hd),
                    head_columns(dq_ref, dq_ref.data(), Tq, a.ld_q, hd)) < 1e-12);
    CHECK(rel_error(head_columns(s.cross ? dkv : dq, dk, Tk, a.ld_k, hd),
                    head_columns(s.cross ? dkv_ref : dq_ref, dk_ref, Tk, a.ld_k, hd)) < 1e-12);
    CHECK(rel_error(head_columns(s.cross ? dkv : dq, dv, Tk, a.ld_v, hd),
                    head_columns(s.cross ? dkv_ref : dq_ref, dv_ref, Tk, a.ld_v, hd)) < 1e-12);
    // Padding columns of ctx are untouched; lse of a fully masked row is -inf.
    for (int64_t r = 0; r < Tq; ++r) CHECK(ctx[r * ld_ctx + hd] == 42.0);
    if (s.causal && s.pad) CHECK(std::isinf(lse[0]));
    for (double x : lse) CHECK(!std::isnan(x));
    // delta_i = d_ctx_i . ctx_i for every row (b, h, i).
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.heads; ++h)
        for (int64_t i = 0; i < s.lq; ++i) {
          double want = 0;
          for (int64_t d = 0; d < s.head_dim; ++d) {
            const int64_t off = (b * s.lq + i) * ld_ctx + h * s.head_dim + d;
            want += d_ctx[off] * ctx[off];
          }
          CHECK(delta[(b * s.heads + h) * s.lq + i] == doctest::Approx(want).epsilon(1e-12));
        }
  }
}

TEST_CASE("fused attention in fp32 agrees with fp64, and bad arguments are refused") {
  auto ops = ls::make_cpu_ops();
  const int64_t B = 2, H = 2, L = 6, D = 4, hd = H * D, T = B * L;
  const auto qkv = random_vector<double>(T * 3 * hd, 320, -2, 2);
  std::vector<float> qkv32(qkv.begin(), qkv.end());
  const auto go = random_vector<double>(T * hd, 321);
  std::vector<float> go32(go.begin(), go.end());
  auto run = [&](auto* base, auto* d_ctx, DType dt, auto zero) {
    using T_ = decltype(zero);
    ls::AttentionArgs a;
    a.q = base;
    a.k = base + hd;
    a.v = base + 2 * hd;
    a.ld_q = a.ld_k = a.ld_v = 3 * hd;
    a.ld_ctx = hd;
    a.batch = B;
    a.heads = H;
    a.len_q = a.len_k = L;
    a.head_dim = D;
    a.causal = true;
    a.scale = 0.5f;
    a.dropout = 0.2f;
    a.key = DropoutKey{3, 1, nullptr};
    a.dt = dt;
    std::vector<T_> ctx(T * hd), lse(B * H * L), delta(B * H * L), grads(T * 3 * hd);
    a.ctx = ctx.data();
    a.lse = lse.data();
    ops->attention_forward(a);
    ops->attention_backward(a, d_ctx, grads.data(), grads.data() + hd, grads.data() + 2 * hd,
                            delta.data(), nullptr);
    std::vector<double> out(ctx.begin(), ctx.end());
    out.insert(out.end(), grads.begin(), grads.end());
    return out;
  };
  const auto r64 = run(qkv.data(), go.data(), DType::F64, double{});
  const auto r32 = run(qkv32.data(), go32.data(), DType::F32, float{});
  // fp32 inputs rounded at u = 6e-8, scores up to ~8 and 6-term sums: ~1e-6 relative at most.
  CHECK(rel_error(r32, r64) < 1e-5);

  ls::AttentionArgs bad;
  bad.batch = 1;
  bad.heads = 1;
  bad.len_q = bad.len_k = 2;
  bad.head_dim = 4;
  bad.ld_q = bad.ld_k = bad.ld_v = bad.ld_ctx = 4;
  bad.dt = DType::F64;
  std::vector<double> buf(64);
  bad.q = bad.k = bad.v = buf.data();
  bad.ctx = buf.data() + 16;
  bad.lse = buf.data() + 32;
  CHECK(status_of([&] { ops->attention_forward(bad); }) == LS_OK);
  auto refused = [&](ls::AttentionArgs a, const char* what) {
    std::string msg;
    try {
      ops->attention_forward(a);
    } catch (const ls::Error& e) {
      msg = e.what();
    }
    CHECK_MESSAGE(msg.find(what) != std::string::npos, msg);
    CHECK(status_of([&] { ops->attention_forward(a); }) == LS_ERR_INVALID_ARGUMENT);
  };
  ls::AttentionArgs a = bad;
  a.lse = nullptr;
  refused(a, "lse is null");
  a = bad;
  a.ld_k = 3;
  refused(a, "row strides");
  a = bad;
  a.dropout = 1.f;
  refused(a, "dropout probability");
  a = bad;
  a.head_dim = 0;
  refused(a, "head_dim");
  a = bad;
  a.dt = DType::F16;
  CHECK(status_of([&] { ops->attention_forward(a); }) == LS_ERR_UNSUPPORTED);
  CHECK(status_of([&] {
          ops->attention_backward(bad, nullptr, buf.data(), buf.data(), buf.data(), buf.data(),
                                  nullptr);
        }) == LS_ERR_INVALID_ARGUMENT);
}
