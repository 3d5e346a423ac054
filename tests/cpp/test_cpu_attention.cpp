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
