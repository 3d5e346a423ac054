// CPU reference kernels between the GEMMs: embedding (fairseq positions, scale, dropout),
// LayerNorm, the bias/activation/dropout/residual fusions and plain dropout. Gradients are
// checked against finite differences in double; dropout masks against philox.h's
// dropout_keep(); fp32 against fp64 where rounding is the only difference.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "layers/kernels/backends.h"
#include "layers/kernels/philox.h"
#include "test_util.h"

using ls::Activation;
using ls::DropoutKey;
using ls::DType;
using ls::Philox4;
using namespace ls::test;

namespace {

// Central differences in double (see numeric_gradient): truncation and rounding stay near
// 1e-9 relative, so 1e-6 catches any wrong term while never failing on noise.
constexpr double kGradTol = 1e-6;

std::vector<double> minus(std::vector<double> v, double start) {
  for (auto& e : v) e -= start;
  return v;
}

// Column sums of a [rows, cols] matrix in double.
std::vector<double> column_sums(const std::vector<double>& x, int64_t rows, int64_t cols) {
  std::vector<double> s(cols, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) s[c] += x[r * cols + c];
  return s;
}

}  // namespace

// ---------------------------------------------------------------- embedding

TEST_CASE("embedding forward: scale * table row + fairseq sinusoidal positions") {
  auto ops = ls::make_cpu_ops();
  const int64_t dim = 8, vocab = 10;
  // Padding (id 1) in the middle and at the start: positions count non-padding tokens only,
  // starting at padding_idx + 1 = 2.
  const std::vector<int32_t> tokens = {5, 1, 7, 1, 3, 9};  // [B=2, L=3]
  const auto table = random_vector<double>(vocab * dim, 40);
  ls::EmbeddingArgs a;
  a.tokens = tokens.data();
  a.batch = 2;
  a.len = 3;
  a.dim = dim;
  a.vocab = vocab;
  a.padding_idx = 1;
  a.scale = 2.f;
  a.dt = DType::F64;
  std::vector<double> out(6 * dim);
  poison(out);
  ops->embedding_forward(a, table.data(), out.data());

  // Rows of fairseq's sinusoidal table at positions 2 and 4 (h = 4, f_i = 10000^(-i/3)),
  // computed independently in Python.
  const std::vector<double> pos2 = {
      0.90929742682568171,  0.092698500778727197, 0.0043088560467428091, 0.0001999999986666665,
      -0.41614683654714241, 0.99569422412373987,  0.99999071683669571,   0.99999998000000012};
  const std::vector<double> pos4 = {
      -0.7568024953079282,  0.18459872362061736, 0.0086176320938569449, 0.00039999998933333303,
      -0.65364362086361194, 0.98281397590675268, 0.99996286751913688,   0.99999992000000104};
  // Expected position per token (-1: padding, no positional term).
  const std::vector<int> position = {2, -1, 3, -1, 2, 3};
  for (int64_t t = 0; t < 6; ++t) {
    for (int64_t c = 0; c < dim; ++c) {
      double expected = 2.0 * table[tokens[t] * dim + c];
      if (position[t] == 2) expected += pos2[c];
      const double got = out[t * dim + c];
      if (position[t] == 3) {
        // Position 3 lies between the two hand-computed rows; check it via the formula.
        const int64_t i = c % 4;
        const double f = std::exp(-static_cast<double>(i) * std::log(10000.0) / 3.0);
        expected += c < 4 ? std::sin(3.0 * f) : std::cos(3.0 * f);
      }
      CHECK(got == doctest::Approx(expected).epsilon(1e-14));
    }
  }
  // The third non-padding token of a row (at index 4, after two paddings) gets position
  // padding_idx + 3 = 4.
  const std::vector<int32_t> long_row = {1, 4, 1, 4, 4};
  a.tokens = long_row.data();
  a.batch = 1;
  a.len = 5;
  a.scale = 1.f;
  std::vector<double> out2(5 * dim);
  ops->embedding_forward(a, table.data(), out2.data());
  for (int64_t c = 0; c < dim; ++c)
    CHECK(out2[4 * dim + c] == doctest::Approx(table[4 * dim + c] + pos4[c]).epsilon(1e-14));
}

TEST_CASE("embedding: odd dim leaves the last sinusoidal column zero") {
  auto ops = ls::make_cpu_ops();
  const int64_t dim = 9;
  const std::vector<int32_t> tokens = {0, 2};
  std::vector<double> table(3 * dim, 0.0), out(2 * dim);
  ls::EmbeddingArgs a;
  a.tokens = tokens.data();
  a.batch = 1;
  a.len = 2;
  a.dim = dim;
  a.vocab = 3;
  a.padding_idx = 1;
  a.dt = DType::F64;
  ops->embedding_forward(a, table.data(), out.data());
  CHECK(out[dim - 1] == 0.0);
  CHECK(out[2 * dim - 1] == 0.0);
  CHECK(out[0] == doctest::Approx(std::sin(2.0)).epsilon(1e-15));
}

TEST_CASE("embedding backward matches finite differences (learned and sinusoidal, dropout)") {
  auto ops = ls::make_cpu_ops();
  const int64_t batch = 2, len = 5, dim = 4, vocab = 7, max_positions = 8;
  const int32_t pad = 1;
  const std::vector<int32_t> tokens = {3, 1, 0, 6, 2, /**/ 1, 1, 5, 3, 3};
  for (bool learned : {true, false}) {
    CAPTURE(learned);
    auto table = random_vector<double>(vocab * dim, 50);
    auto positions = random_vector<double>(max_positions * dim, 51);
    const auto weights = random_vector<double>(batch * len * dim, 52);
    ls::EmbeddingArgs a;
    a.tokens = tokens.data();
    a.batch = batch;
    a.len = len;
    a.dim = dim;
    a.vocab = vocab;
    a.padding_idx = pad;
    a.scale = 1.5f;
    a.learned_positions = learned ? positions.data() : nullptr;
    a.max_positions = max_positions;
    a.dt = DType::F64;
    a.dropout = 0.3f;
    a.key = DropoutKey{1234, 7};
    std::vector<double> out(batch * len * dim);
    auto loss = [&]() {
      ops->embedding_forward(a, table.data(), out.data());
      return dot(weights, out);
    };
    const double start = 0.5;  // gradients accumulate
    std::vector<double> d_table(table.size(), start), d_pos(positions.size(), start);
    ops->embedding_backward(a, weights.data(), d_table.data(), learned ? d_pos.data() : nullptr,
                            true);
    auto numeric = numeric_gradient(table, loss);
    // The padding row is read by forward (fairseq keeps it zero) but never gets a gradient.
    for (int64_t c = 0; c < dim; ++c) {
      CHECK(d_table[pad * dim + c] == start);
      numeric[pad * dim + c] = 0.0;
      d_table[pad * dim + c] = start;
    }
    CHECK(rel_error(minus(d_table, start), numeric) < kGradTol);
    if (learned) CHECK(gradient_error(positions, loss, minus(d_pos, start)) < kGradTol);
    // Dropout really dropped something (else the check above would not cover it).
    ops->embedding_forward(a, table.data(), out.data());
    int zeros = 0;
    for (double v : out) zeros += v == 0.0;
    CHECK(zeros > 0);
  }
}

TEST_CASE("embedding rejects out-of-range tokens before writing anything") {
  auto ops = ls::make_cpu_ops();
  const int64_t dim = 4;
  std::vector<int32_t> tokens = {2, 0, 3, 9};  // 9 >= vocab at flat position 3
  std::vector<double> table(5 * dim, 1.0), out(4 * dim);
  poison(out);
  ls::EmbeddingArgs a;
  a.tokens = tokens.data();
  a.batch = 2;
  a.len = 2;
  a.dim = dim;
  a.vocab = 5;
  a.dt = DType::F64;
  const std::string message =
      error_message([&] { ops->embedding_forward(a, table.data(), out.data()); });
  CHECK(message.find("embedding_forward") != std::string::npos);
  CHECK(message.find("token id 9") != std::string::npos);
  CHECK(message.find("position 3") != std::string::npos);
  CHECK(status_of([&] { ops->embedding_forward(a, table.data(), out.data()); }) ==
        LS_ERR_INVALID_ARGUMENT);
  for (double v : out) CHECK(std::isnan(v));

  tokens[3] = -1;
  std::vector<double> d_table(table.size(), 0.0);
  CHECK(status_of([&] { ops->embedding_backward(a, out.data(), d_table.data(), nullptr, true); }) ==
        LS_ERR_INVALID_ARGUMENT);
  for (double v : d_table) CHECK(v == 0.0);

  // A learned table too short for the positions: 4 tokens after padding_idx 1 need 6 rows.
  tokens = {2, 2, 2, 2};
  a.batch = 1;
  a.len = 4;
  std::vector<double> positions(6 * dim, 0.0);
  a.learned_positions = positions.data();
  a.max_positions = 5;
  CHECK(status_of([&] { ops->embedding_forward(a, table.data(), out.data()); }) ==
        LS_ERR_INVALID_ARGUMENT);
  a.max_positions = 6;
  CHECK(status_of([&] { ops->embedding_forward(a, table.data(), out.data()); }) == LS_OK);
  CHECK(status_of([&] { ops->embedding_forward(a, nullptr, out.data()); }) ==
        LS_ERR_INVALID_ARGUMENT);
}

// ---------------------------------------------------------------- LayerNorm

TEST_CASE("layernorm forward on a hand-computed row") {
  auto ops = ls::make_cpu_ops();
  const std::vector<double> x = {1, 2, 3, 4}, gamma = {1, 1, 2, 1}, beta = {0, 0, 0, 0.5};
  std::vector<double> y(4), mean(1), rstd(1);
  ops->layernorm_forward(x.data(), gamma.data(), beta.data(), y.data(), mean.data(), rstd.data(), 1,
                         4, 0.f, DType::F64);
  // mean 2.5, variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25.
  CHECK(mean[0] == doctest::Approx(2.5).epsilon(1e-15));
  CHECK(rstd[0] == doctest::Approx(0.89442719099991586).epsilon(1e-15));
  const std::vector<double> expected = {-1.3416407864998738, -0.44721359549995793,
                                        2 * 0.44721359549995793, 1.3416407864998738 + 0.5};
  CHECK(rel_error(y, expected) < 1e-15);
}

TEST_CASE("layernorm backward (dx with d_residual, d_gamma, d_beta) matches finite differences") {
  auto ops = ls::make_cpu_ops();
  const int64_t rows = 3, cols = 6;
  const float eps = 1e-5f;
  auto x = random_vector<double>(rows * cols, 60, -2, 2);
  auto gamma = random_vector<double>(cols, 61, 0.5, 1.5);
  auto beta = random_vector<double>(cols, 62);
  const auto weights = random_vector<double>(rows * cols, 63);
  const auto d_residual = random_vector<double>(rows * cols, 64);
  std::vector<double> y(rows * cols), mean(rows), rstd(rows);
  // The residual branch adds <d_residual, x> to the loss, so its gradient reaches dx.
  auto loss = [&]() {
    ops->layernorm_forward(x.data(), gamma.data(), beta.data(), y.data(), mean.data(), rstd.data(),
                           rows, cols, eps, DType::F64);
    return dot(weights, y) + dot(d_residual, x);
  };
  loss();
  const double start = -0.75;
  std::vector<double> dx(rows * cols), d_gamma(cols, start), d_beta(cols, start);
  ops->layernorm_backward(weights.data(), x.data(), gamma.data(), mean.data(), rstd.data(),
                          d_residual.data(), dx.data(), d_gamma.data(), d_beta.data(), rows, cols,
                          DType::F64);
  CHECK(gradient_error(x, loss, dx) < kGradTol);
  CHECK(gradient_error(gamma, loss, minus(d_gamma, start)) < kGradTol);
  CHECK(gradient_error(beta, loss, minus(d_beta, start)) < kGradTol);

  // Without d_residual, dx is the same less d_residual.
  std::vector<double> dx_plain(rows * cols);
  ops->layernorm_backward(weights.data(), x.data(), gamma.data(), mean.data(), rstd.data(), nullptr,
                          dx_plain.data(), d_gamma.data(), d_beta.data(), rows, cols, DType::F64);
  for (size_t i = 0; i < dx.size(); ++i)
    CHECK(dx_plain[i] + d_residual[i] == doctest::Approx(dx[i]).epsilon(1e-14));
}

TEST_CASE("layernorm in fp32 agrees with fp64") {
  auto ops = ls::make_cpu_ops();
  const int64_t rows = 4, cols = 64;
  const auto x = random_vector<double>(rows * cols, 70, -3, 3);
  const auto gamma = random_vector<double>(cols, 71), beta = random_vector<double>(cols, 72);
  const auto dy = random_vector<double>(rows * cols, 73);
  std::vector<double> y(rows * cols), mean(rows), rstd(rows), dx(rows * cols), dg(cols, 0),
      db(cols, 0);
  ops->layernorm_forward(x.data(), gamma.data(), beta.data(), y.data(), mean.data(), rstd.data(),
                         rows, cols, 1e-5f, DType::F64);
  ops->layernorm_backward(dy.data(), x.data(), gamma.data(), mean.data(), rstd.data(), nullptr,
                          dx.data(), dg.data(), db.data(), rows, cols, DType::F64);
  const auto x32 = convert<float>(x), g32 = convert<float>(gamma), b32 = convert<float>(beta),
             dy32 = convert<float>(dy);
  std::vector<float> y32(rows * cols), mean32(rows), rstd32(rows), dx32(rows * cols), dg32(cols, 0),
      db32(cols, 0);
  ops->layernorm_forward(x32.data(), g32.data(), b32.data(), y32.data(), mean32.data(),
                         rstd32.data(), rows, cols, 1e-5f, DType::F32);
  ops->layernorm_backward(dy32.data(), x32.data(), g32.data(), mean32.data(), rstd32.data(),
                          nullptr, dx32.data(), dg32.data(), db32.data(), rows, cols, DType::F32);
  // fp32 rounding (u = 6e-8) of inputs and of 64-term row sums: ~cols u = 4e-6 worst case.
  CHECK(rel_error(y32, y) < 1e-5);
  CHECK(rel_error(rstd32, rstd) < 1e-5);
  CHECK(rel_error(dx32, dx) < 1e-5);
  CHECK(rel_error(dg32, dg) < 1e-5);
  CHECK(rel_error(db32, db) < 1e-5);
}

TEST_CASE("layernorm backward from the output equals the backward from the input") {
  // xhat = (y - beta) / gamma: in fp64 the two differ by the rounding of y (u = 1e-16 times
  // |y| / |gamma| <= ~10 here), so they agree to 1e-13; in fp32 to the fp32 tolerance of the
  // test above. gamma takes both signs, beta is non-zero, so that a mixed-up parameter shows.
  auto ops = ls::make_cpu_ops();
  const int64_t rows = 5, cols = 48;
  const auto x = random_vector<double>(rows * cols, 90, -3, 3);
  auto gamma = random_vector<double>(cols, 91, 0.5, 1.5);
  for (int64_t c = 0; c < cols; c += 2) gamma[c] = -gamma[c];
  const auto beta = random_vector<double>(cols, 92);
  const auto dy = random_vector<double>(rows * cols, 93);
  const auto d_residual = random_vector<double>(rows * cols, 94);
  std::vector<double> y(rows * cols), mean(rows), rstd(rows);
  ops->layernorm_forward(x.data(), gamma.data(), beta.data(), y.data(), mean.data(), rstd.data(),
                         rows, cols, 1e-5f, DType::F64);
  for (const double* res : {static_cast<const double*>(nullptr), d_residual.data()}) {
    CAPTURE(res != nullptr);
    std::vector<double> dx_in(rows * cols), dg_in(cols, 0.25), db_in(cols, 0.25);
    std::vector<double> dx_out(rows * cols), dg_out(cols, 0.25), db_out(cols, 0.25);
    ops->layernorm_backward(dy.data(), x.data(), gamma.data(), mean.data(), rstd.data(), res,
                            dx_in.data(), dg_in.data(), db_in.data(), rows, cols, DType::F64);
    ops->layernorm_backward_from_output(dy.data(), y.data(), gamma.data(), beta.data(),
                                        rstd.data(), res, dx_out.data(), dg_out.data(),
                                        db_out.data(), rows, cols, DType::F64);
    CHECK(rel_error(dx_out, dx_in) < 1e-13);
    CHECK(rel_error(dg_out, dg_in) < 1e-13);
    CHECK(db_out == db_in);  // d_beta does not involve xhat: the same sums in the same order
  }
  // fp32 against the fp64 backward from the input.
  std::vector<double> dx(rows * cols), dg(cols, 0), db(cols, 0);
  ops->layernorm_backward(dy.data(), x.data(), gamma.data(), mean.data(), rstd.data(), nullptr,
                          dx.data(), dg.data(), db.data(), rows, cols, DType::F64);
  const auto y32 = convert<float>(y), g32 = convert<float>(gamma), b32 = convert<float>(beta),
             dy32 = convert<float>(dy), rstd32 = convert<float>(rstd);
  std::vector<float> dx32(rows * cols), dg32(cols, 0), db32(cols, 0);
  ops->layernorm_backward_from_output(dy32.data(), y32.data(), g32.data(), b32.data(),
                                      rstd32.data(), nullptr, dx32.data(), dg32.data(),
                                      db32.data(), rows, cols, DType::F32);
  CHECK(rel_error(dx32, dx) < 1e-5);
  CHECK(rel_error(dg32, dg) < 1e-5);
  CHECK(rel_error(db32, db) < 1e-5);
}

TEST_CASE("layernorm backward from the output rejects null pointers, naming them") {
  auto ops = ls::make_cpu_ops();
  std::vector<float> v(8, 1.f);
  float* p = v.data();
  auto call = [&](const void* y, const void* beta) {
    ops->layernorm_backward_from_output(p, y, p, beta, p, nullptr, p, p, p, 2, 4, DType::F32);
  };
  for (auto [y, beta, name] :
       {std::tuple<const void*, const void*, const char*>{nullptr, p, "y"}, {p, nullptr, "beta"}}) {
    CAPTURE(name);
    bool threw = false;
    try {
      call(y, beta);
    } catch (const ls::Error& e) {
      threw = true;
      CHECK(e.status() == LS_ERR_INVALID_ARGUMENT);
      CHECK(std::string(e.what()).find("layernorm_backward_from_output") != std::string::npos);
      CHECK(std::string(e.what()).find(name) != std::string::npos);
    }
    CHECK(threw);
  }
}

TEST_CASE("layernorm backward with the output: the backward's gradients and the forward's y") {
  // layernorm_backward_with_output is layernorm_backward plus y from x and the saved statistics
  // (a pre-LN block's recomputed LayerNorm output): every output bit for bit, in fp64 and fp32.
  auto ops = ls::make_cpu_ops();
  const int64_t rows = 5, cols = 48;
  auto run = [&](auto tag, DType dt) {
    using T = decltype(tag);
    const auto x = convert<T>(random_vector<double>(rows * cols, 110, -3, 3));
    auto gamma = convert<T>(random_vector<double>(cols, 111, 0.5, 1.5));
    const auto beta = convert<T>(random_vector<double>(cols, 112));
    const auto dy = convert<T>(random_vector<double>(rows * cols, 113));
    const auto d_residual = convert<T>(random_vector<double>(rows * cols, 114));
    std::vector<T> y(rows * cols), mean(rows), rstd(rows);
    ops->layernorm_forward(x.data(), gamma.data(), beta.data(), y.data(), mean.data(), rstd.data(),
                           rows, cols, 1e-5f, dt);
    for (const T* res : {static_cast<const T*>(nullptr), d_residual.data()}) {
      CAPTURE(res != nullptr);
      std::vector<T> dx(rows * cols), dg(cols, T(0.25)), db(cols, T(0.25));
      ops->layernorm_backward(dy.data(), x.data(), gamma.data(), mean.data(), rstd.data(), res,
                              dx.data(), dg.data(), db.data(), rows, cols, dt);
      const T nan = std::numeric_limits<T>::quiet_NaN();
      std::vector<T> dx_w(rows * cols, nan), y_w(rows * cols, nan), dg_w(cols, T(0.25)),
          db_w(cols, T(0.25));
      ops->layernorm_backward_with_output(dy.data(), x.data(), gamma.data(), beta.data(),
                                          mean.data(), rstd.data(), res, dx_w.data(), y_w.data(),
                                          dg_w.data(), db_w.data(), rows, cols, dt);
      CHECK(dx_w == dx);
      CHECK(dg_w == dg);
      CHECK(db_w == db);
      CHECK(y_w == y);
    }
  };
  SUBCASE("fp64") {
    run(double{}, DType::F64);
  }
  SUBCASE("fp32") {
    run(float{}, DType::F32);
  }
}

TEST_CASE("layernorm backward with the output rejects null pointers, naming them") {
  auto ops = ls::make_cpu_ops();
  std::vector<float> v(8, 1.f);
  float* p = v.data();
  for (auto [beta, y, name] :
       {std::tuple<const void*, void*, const char*>{nullptr, p, "beta"}, {p, nullptr, "y"}}) {
    CAPTURE(name);
    bool threw = false;
    try {
      ops->layernorm_backward_with_output(p, p, p, beta, p, p, nullptr, p, y, p, p, 2, 4,
                                          DType::F32);
    } catch (const ls::Error& e) {
      threw = true;
      CHECK(e.status() == LS_ERR_INVALID_ARGUMENT);
      CHECK(std::string(e.what()).find("layernorm_backward_with_output") != std::string::npos);
      CHECK(std::string(e.what()).find(std::string(": ") + name + " is null") != std::string::npos);
    }
    CHECK(threw);
  }
}

// ---------------------------------------------------------------- elementwise fusions

TEST_CASE("bias_dropout_residual forward / dropout_bias_backward match finite differences") {
  auto ops = ls::make_cpu_ops();
  const int64_t rows = 4, cols = 5;
  const float p = 0.25f;
  const DropoutKey key{99, 3};
  auto x = random_vector<double>(rows * cols, 80);
  auto bias = random_vector<double>(cols, 81);
  auto residual = random_vector<double>(rows * cols, 82);
  const auto weights = random_vector<double>(rows * cols, 83);
  std::vector<double> out(rows * cols);
  auto loss = [&]() {
    ops->bias_dropout_residual_forward(x.data(), bias.data(), residual.data(), out.data(), rows,
                                       cols, p, key, DType::F64);
    return dot(weights, out);
  };
  loss();
  const double start = 2.0;
  std::vector<double> dx(rows * cols), d_bias(cols, start);
  ops->dropout_bias_backward(weights.data(), dx.data(), d_bias.data(), rows, cols, p, key,
                             DType::F64);
  CHECK(gradient_error(x, loss, dx) < kGradTol);
  CHECK(gradient_error(bias, loss, minus(d_bias, start)) < kGradTol);
  CHECK(gradient_error(residual, loss, weights) < kGradTol);

  // out may alias residual.
  loss();
  std::vector<double> in_place = residual;
  ops->bias_dropout_residual_forward(x.data(), bias.data(), in_place.data(), in_place.data(), rows,
                                     cols, p, key, DType::F64);
  CHECK(in_place == out);
  // A null bias is x alone.
  std::vector<double> zero_bias(cols, 0.0), with_zero(rows * cols), without(rows * cols);
  ops->bias_dropout_residual_forward(x.data(), zero_bias.data(), residual.data(), with_zero.data(),
                                     rows, cols, p, key, DType::F64);
  ops->bias_dropout_residual_forward(x.data(), nullptr, residual.data(), without.data(), rows, cols,
                                     p, key, DType::F64);
  CHECK(with_zero == without);
}

TEST_CASE("bias_dropout_residual_layernorm_forward is the two ops in turn, checked up front") {
  auto ops = ls::make_cpu_ops();
  const int64_t rows = 3, cols = 6;
  const float p = 0.25f, eps = 1e-5f;
  const DropoutKey key{41, 2};
  const auto x = random_vector<double>(rows * cols, 70);
  const auto bias = random_vector<double>(cols, 71);
  const auto residual = random_vector<double>(rows * cols, 72);
  const auto gamma = random_vector<double>(cols, 73);
  const auto beta = random_vector<double>(cols, 74);
  std::vector<double> out_ref(rows * cols), y_ref(rows * cols), mean_ref(rows), rstd_ref(rows);
  ops->bias_dropout_residual_forward(x.data(), bias.data(), residual.data(), out_ref.data(), rows,
                                     cols, p, key, DType::F64);
  ops->layernorm_forward(out_ref.data(), gamma.data(), beta.data(), y_ref.data(), mean_ref.data(),
                         rstd_ref.data(), rows, cols, eps, DType::F64);
  for (bool alias : {false, true}) {
    CAPTURE(alias);
    std::vector<double> res = residual, out_buf(rows * cols), y(rows * cols), mean(rows),
                        rstd(rows);
    double* out = alias ? res.data() : out_buf.data();
    ops->bias_dropout_residual_layernorm_forward(x.data(), bias.data(), res.data(), out,
                                                 gamma.data(), beta.data(), y.data(), mean.data(),
                                                 rstd.data(), rows, cols, p, key, eps, DType::F64);
    CHECK(std::vector<double>(out, out + rows * cols) == out_ref);
    CHECK(y == y_ref);
    CHECK(mean == mean_ref);
    CHECK(rstd == rstd_ref);
  }
  // Bad arguments are refused before anything is written: out keeps its contents.
  std::vector<double> out(rows * cols, 7.0), y(rows * cols, 7.0), mean(rows), rstd(rows);
  auto call = [&](const void* g, void* yy, float pp, float e, int64_t c) {
    return [&, g, yy, pp, e, c] {
      ops->bias_dropout_residual_layernorm_forward(x.data(), bias.data(), residual.data(),
                                                   out.data(), g, beta.data(), yy, mean.data(),
                                                   rstd.data(), rows, c, pp, key, e, DType::F64);
    };
  };
  const std::string name = "bias_dropout_residual_layernorm_forward: ";
  for (auto [f, text] :
       {std::pair<std::function<void()>, std::string>{call(nullptr, y.data(), p, eps, cols),
                                                      "gamma is null"},
        {call(gamma.data(), nullptr, p, eps, cols), "y is null"},
        {call(gamma.data(), out.data(), p, eps, cols), "y must not alias"},
        {call(gamma.data(), y.data(), 1.f, eps, cols), "dropout probability 1"},
        {call(gamma.data(), y.data(), p, -1.f, cols), "eps = -1 must be >= 0"},
        {call(gamma.data(), y.data(), p, std::nanf(""), cols), "eps = nan must be >= 0"},
        {call(gamma.data(), y.data(), p, eps, 0), "cols = 0 must be positive"}}) {
    CAPTURE(text);
    CHECK(status_of(f) == LS_ERR_INVALID_ARGUMENT);
    CHECK(error_message(f).find(name + text) != std::string::npos);
    CHECK(out == std::vector<double>(rows * cols, 7.0));
  }
}

TEST_CASE("act_dropout backward matches finite differences (ReLU and GELU, with bias grad)") {
  auto ops = ls::make_cpu_ops();
  const int64_t rows = 3, cols = 7;
  const float p = 0.2f;
  const DropoutKey key{5, 11};
  for (Activation act : {Activation::ReLU, Activation::GELU}) {
    CAPTURE(static_cast<int>(act));
    // pre = base + bias; keep every pre-activation at least 0.1 from ReLU's kink at 0.
    const auto base = random_vector_away_from_zero<double>(rows * cols, 90, 0.2, 2.0);
    auto bias = random_vector<double>(cols, 91, -0.05, 0.05);
    const auto weights = random_vector<double>(rows * cols, 92);
    std::vector<double> pre(rows * cols), out(rows * cols);
    auto make_pre = [&]() {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) pre[r * cols + c] = base[r * cols + c] + bias[c];
    };
    auto loss = [&]() {
      make_pre();
      ops->act_dropout_forward(pre.data(), out.data(), rows, cols, act, p, key, DType::F64);
      return dot(weights, out);
    };
    loss();
    const double start = 1.0;
    std::vector<double> d_pre(rows * cols), d_bias(cols, start);
    ops->act_dropout_backward(weights.data(), pre.data(), d_pre.data(), d_bias.data(), rows, cols,
                              act, p, key, DType::F64);
    CHECK(gradient_error(
              pre,
              [&] {
                ops->act_dropout_forward(pre.data(), out.data(), rows, cols, act, p, key,
                                         DType::F64);
                return dot(weights, out);
              },
              d_pre) < kGradTol);
    CHECK(gradient_error(bias, loss, minus(d_bias, start)) < kGradTol);
    CHECK(rel_error(minus(d_bias, start), column_sums(d_pre, rows, cols)) < 1e-15);
  }
}

TEST_CASE_TEMPLATE("relu_dropout_backward_from_output equals act_dropout_backward(ReLU) given pre",
                   T, double, float) {
  auto ops = ls::make_cpu_ops();
  const DType dt = sizeof(T) == 8 ? DType::F64 : DType::F32;
  struct Shape {
    int64_t rows, cols;
  };
  for (Shape s : {Shape{3, 7}, Shape{37, 129}, Shape{1, 1}}) {
    for (float p : {0.f, 0.1f, 0.5f}) {
      CAPTURE(s.rows);
      CAPTURE(s.cols);
      CAPTURE(p);
      const int64_t rows = s.rows, cols = s.cols;
      const size_t n = static_cast<size_t>(rows * cols);
      const DropoutKey key{77, 13};
      auto pre = random_vector<T>(n, 120);
      for (size_t i = 0; i < n; i += 5) pre[i] = T(0);  // ReLU's kink: relu'(0) = 0 on both
      const auto d_out = random_vector<T>(n, 121, -2.0, 2.0);
      const auto d_bias0 = random_vector<T>(static_cast<size_t>(cols), 122);

      // Forward out of place and in place (out aliasing pre) agree.
      std::vector<T> out(n);
      ops->act_dropout_forward(pre.data(), out.data(), rows, cols, Activation::ReLU, p, key, dt);
      std::vector<T> in_place = pre;
      ops->act_dropout_forward(in_place.data(), in_place.data(), rows, cols, Activation::ReLU, p,
                               key, dt);
      CHECK(in_place == out);

      std::vector<T> d_pre_ref(n), d_bias_ref = d_bias0;
      ops->act_dropout_backward(d_out.data(), pre.data(), d_pre_ref.data(), d_bias_ref.data(), rows,
                                cols, Activation::ReLU, p, key, dt);
      // The same products and the same column-sum order: equal to the last bit, and d_bias
      // accumulates onto its start value.
      std::vector<T> d_pre(n, std::numeric_limits<T>::quiet_NaN()), d_bias = d_bias0;
      ops->relu_dropout_backward_from_output(d_out.data(), out.data(), d_pre.data(), d_bias.data(),
                                             rows, cols, p, dt);
      CHECK(d_pre == d_pre_ref);
      CHECK(d_bias == d_bias_ref);
      if (p > 0 && n > 100) {  // dropped elements with pre > 0 exist, so the mask matters
        size_t dropped_positive = 0;
        for (size_t i = 0; i < n; ++i) dropped_positive += pre[i] > T(0) && out[i] == T(0);
        CHECK(dropped_positive > 0);
      }

      // d_pre aliasing d_out, and a null d_bias.
      std::vector<T> alias = d_out;
      ops->relu_dropout_backward_from_output(alias.data(), out.data(), alias.data(), nullptr, rows,
                                             cols, p, dt);
      CHECK(alias == d_pre_ref);
    }
  }
}

TEST_CASE("bias_grad accumulates column sums") {
  auto ops = ls::make_cpu_ops();
  const std::vector<double> dy = {1, 2, 3, 4, 5, 6};  // [2, 3]
  std::vector<double> d_bias = {10, 20, 30};
  ops->bias_grad(dy.data(), d_bias.data(), 2, 3, DType::F64);
  CHECK(d_bias == std::vector<double>{15, 27, 39});
}

// ---------------------------------------------------------------- dropout

TEST_CASE("philox4x32 reproduces Random123's known-answer vectors for 7 and 10 rounds") {
  struct Kat {
    uint32_t ctr[4], key[2], out7[4], out10[4];
  };
  // Random123's kat_vectors, philox4x32 7 and 10.
  const Kat kats[] = {
      {{0, 0, 0, 0},
       {0, 0},
       {0x5f6fb709u, 0x0d893f64u, 0x4f121f81u, 0x4f730a48u},
       {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{~0u, ~0u, ~0u, ~0u},
       {~0u, ~0u},
       {0x5207ddc2u, 0x45165e59u, 0x4d8ee751u, 0x8c52f662u},
       {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
       {0xa4093822u, 0x299f31d0u},
       {0x4dfccabau, 0x190a87f0u, 0xc47362bau, 0xb6b5242au},
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  for (const Kat& k : kats) {
    const auto lo = uint64_t(k.ctr[0]) | uint64_t(k.ctr[1]) << 32;
    const auto hi = uint64_t(k.ctr[2]) | uint64_t(k.ctr[3]) << 32;
    const auto key = uint64_t(k.key[0]) | uint64_t(k.key[1]) << 32;
    const Philox4 r7 = ls::philox4x32<7>(key, lo, hi);
    const Philox4 r10 = ls::philox4x32<10>(key, lo, hi);
    const Philox4 d = ls::dropout_draw(key, lo, hi);
    for (int w = 0; w < 4; ++w) {
      CHECK(r7.v[w] == k.out7[w]);
      CHECK(r10.v[w] == k.out10[w]);
      CHECK(d.v[w] == k.out7[w]);  // dropout draws with 7 rounds (philox.h)
    }
  }
}

TEST_CASE("dropout draws 16-bit lanes: element i is lane i % 8 of draw i / 8") {
  CHECK(ls::dropout_keep_threshold(0.f) == 65536u);
  CHECK(ls::dropout_keep_threshold(0.1f) == 58982u);  // floor(0.9 * 65536)
  CHECK(ls::dropout_keep_threshold(0.5f) == 32768u);
  CHECK(ls::dropout_keep_threshold(1e-9f) == 65535u);  // any p > 0 drops something
  CHECK(ls::dropout_keep_threshold(1.f) == 0u);
  const DropoutKey key{0xfeedbeefcafe1234ULL, 7};
  const uint32_t threshold = ls::dropout_keep_threshold(0.3f);
  for (uint64_t g = 0; g < 64; ++g) {
    const Philox4 r = ls::dropout_draw(key.seed, g, key.offset);
    const uint32_t bits = ls::dropout_keep_bits8(r, threshold);
    for (int l = 0; l < 8; ++l) {
      const uint32_t lane = l % 2 == 0 ? r.v[l / 2] & 0xFFFFu : r.v[l / 2] >> 16;
      CHECK(ls::dropout_lane(r, l) == lane);
      CHECK(ls::dropout_keep(key, 8 * g + l, threshold) == (lane < threshold));
      CHECK(((bits >> l) & 1u) == uint32_t(lane < threshold));
    }
  }
}

TEST_CASE("dropout keeps each element exactly when philox dropout_keep() says so") {
  auto ops = ls::make_cpu_ops();
  const size_t n = 1003;  // not a multiple of 4
  const float p = 0.4f;
  const DropoutKey key{0x123456789abcdefULL, 42};
  const uint32_t threshold = ls::dropout_keep_threshold(p);
  const double scale = 1.0 / (1.0 - static_cast<double>(p));
  const auto x = random_vector<double>(n, 100, 0.5, 1.5);  // never 0, so 0 means dropped
  std::vector<double> out(n);
  ops->dropout_forward(x.data(), out.data(), n, p, key, DType::F64);
  for (size_t i = 0; i < n; ++i) {
    const double expected = ls::dropout_keep(key, i, threshold) ? x[i] * scale : 0.0;
    CHECK(out[i] == expected);
  }
  // fp32 uses the same mask.
  const auto x32 = convert<float>(x);
  std::vector<float> out32(n);
  ops->dropout_forward(x32.data(), out32.data(), n, p, key, DType::F32);
  for (size_t i = 0; i < n; ++i) CHECK((out32[i] != 0.f) == ls::dropout_keep(key, i, threshold));
  // In place gives the same.
  std::vector<double> in_place = x;
  ops->dropout_forward(in_place.data(), in_place.data(), n, p, key, DType::F64);
  CHECK(in_place == out);
}

TEST_CASE("dropout keeps 1-p of 1e6 elements within 4 sigma; keys fix the mask") {
  auto ops = ls::make_cpu_ops();
  const size_t n = 1000000;
  const float p = 0.1f;
  const std::vector<float> ones(n, 1.f);
  std::vector<float> a(n), b(n), c(n);
  const DropoutKey key{2024, 5};
  ops->dropout_forward(ones.data(), a.data(), n, p, key, DType::F32);
  size_t kept = 0;
  for (float v : a) kept += v != 0.f;
  const double fraction = static_cast<double>(kept) / n;
  const double sigma = std::sqrt(0.1 * 0.9 / n);  // binomial standard deviation of the fraction
  CHECK(std::fabs(fraction - 0.9) < 4 * sigma);

  ops->dropout_forward(ones.data(), b.data(), n, p, key, DType::F32);
  CHECK(a == b);  // same key, same mask

  ops->dropout_forward(ones.data(), c.data(), n, p, DropoutKey{2024, 6}, DType::F32);
  size_t differ = 0;
  for (size_t i = 0; i < n; ++i) differ += (a[i] != 0.f) != (c[i] != 0.f);
  // Independent masks disagree on 2 p (1-p) = 18% of elements.
  CHECK(std::fabs(static_cast<double>(differ) / n - 0.18) < 0.01);

  ops->dropout_forward(ones.data(), c.data(), n, p, DropoutKey{2025, 5}, DType::F32);
  differ = 0;
  for (size_t i = 0; i < n; ++i) differ += (a[i] != 0.f) != (c[i] != 0.f);
  CHECK(std::fabs(static_cast<double>(differ) / n - 0.18) < 0.01);
}

TEST_CASE("dropout reads the pass counter: each training pass draws a new mask") {
  // The runtime keys every site with (seed, site, &pass_counter); the mask of pass c must be
  // the mask of offset site + c * kDropoutSitesPerPass, and differ from pass to pass.
  auto ops = ls::make_cpu_ops();
  const size_t n = 4096;
  const float p = 0.5f;
  const std::vector<double> ones(n, 1.0);
  uint64_t counter = 0;
  const DropoutKey streamed{99, 3, &counter};
  std::vector<double> pass0(n), pass2(n), want2(n);
  ops->dropout_forward(ones.data(), pass0.data(), n, p, streamed, DType::F64);
  counter = 2;
  ops->dropout_forward(ones.data(), pass2.data(), n, p, streamed, DType::F64);
  ops->dropout_forward(ones.data(), want2.data(), n, p,
                       DropoutKey{99, 3 + 2 * ls::kDropoutSitesPerPass, nullptr}, DType::F64);
  CHECK(pass2 == want2);
  size_t differ = 0;
  for (size_t i = 0; i < n; ++i) differ += pass0[i] != pass2[i];
  CHECK(differ > n / 4);  // independent masks at p = 0.5 differ on half of the elements
}

TEST_CASE("dropout with p == 0 is the identity") {
  auto ops = ls::make_cpu_ops();
  const auto x = random_vector<double>(37, 110);
  std::vector<double> out(37);
  ops->dropout_forward(x.data(), out.data(), x.size(), 0.f, DropoutKey{1, 1}, DType::F64);
  CHECK(out == x);
  std::vector<double> dx(37);
  ops->dropout_bias_backward(x.data(), dx.data(), nullptr, 1, 37, 0.f, DropoutKey{1, 1},
                             DType::F64);
  CHECK(dx == x);
}

TEST_CASE("elementwise kernels reject bad arguments") {
  auto ops = ls::make_cpu_ops();
  std::vector<double> x(6, 1.0), out(6);
  const DropoutKey key{};
  CHECK(status_of([&] { ops->dropout_forward(x.data(), out.data(), 6, 1.f, key, DType::F64); }) ==
        LS_ERR_INVALID_ARGUMENT);
  CHECK(status_of([&] { ops->dropout_forward(x.data(), out.data(), 6, -0.1f, key, DType::F64); }) ==
        LS_ERR_INVALID_ARGUMENT);
  CHECK(status_of([&] { ops->dropout_forward(nullptr, out.data(), 6, 0.f, key, DType::F64); }) ==
        LS_ERR_INVALID_ARGUMENT);
  CHECK(status_of([&] {
          ops->act_dropout_forward(x.data(), out.data(), -2, 3, Activation::GELU, 0.f, key,
                                   DType::F64);
        }) == LS_ERR_INVALID_ARGUMENT);
  CHECK(status_of([&] {
          ops->act_dropout_forward(x.data(), out.data(), 2, 3, Activation::GELU, 0.f, key,
                                   DType::BF16);
        }) == LS_ERR_UNSUPPORTED);
  std::vector<double> mean(2), rstd(2), g(3, 1.0);
  CHECK(status_of([&] {
          ops->layernorm_forward(x.data(), g.data(), nullptr, out.data(), mean.data(), rstd.data(),
                                 2, 3, 1e-5f, DType::F64);
        }) == LS_ERR_INVALID_ARGUMENT);
  CHECK(error_message([&] {
          ops->layernorm_forward(x.data(), g.data(), nullptr, out.data(), mean.data(), rstd.data(),
                                 2, 3, 1e-5f, DType::F64);
        }).find("layernorm_forward: beta") != std::string::npos);
}

TEST_CASE("zero_ranges zeroes exactly its ranges and checks them all before writing") {
  auto ops = ls::make_cpu_ops();
  std::vector<float> f(40, 2.f);
  const std::vector<uint64_t> r = {0, 1, 3, 3, 5, 9, 9, 12, 39, 40};  // empty and adjacent ranges
  ops->zero_ranges(f.data(), r.data(), 5, 4, sizeof(float));
  for (size_t i = 0; i < f.size(); ++i) {
    const bool in = i < 1 || (i >= 5 && i < 12) || i == 39;
    CAPTURE(i);
    CHECK(f[i] == (in ? 0.f : 2.f));
  }
  std::vector<double> d(6, 3.0);
  const std::vector<uint64_t> rd = {2, 4};
  ops->zero_ranges(d.data(), rd.data(), 1, 2, sizeof(double));
  CHECK(d == std::vector<double>{3, 3, 0, 0, 3, 3});
  // A range longer than max_elements, or reversed, fails before any range is zeroed.
  std::vector<float> g(8, 1.f);
  const std::vector<uint64_t> bad_len = {0, 2, 4, 8};
  CHECK_THROWS_WITH_AS(ops->zero_ranges(g.data(), bad_len.data(), 2, 3, 4),
                       doctest::Contains("longer than max_elements 3"), ls::Error);
  const std::vector<uint64_t> reversed = {0, 2, 5, 4};
  CHECK_THROWS_AS(ops->zero_ranges(g.data(), reversed.data(), 2, 8, 4), ls::Error);
  CHECK(g == std::vector<float>(8, 1.f));
  CHECK_THROWS_WITH_AS(ops->zero_ranges(g.data(), r.data(), 1, 4, 2),
                       doctest::Contains("elem_bytes must be 4 or 8"), ls::Error);
  CHECK_THROWS_AS(ops->zero_ranges(nullptr, r.data(), 1, 4, 4), ls::Error);
}
