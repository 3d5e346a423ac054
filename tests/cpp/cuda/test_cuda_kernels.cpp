// Every fused CUDA kernel (forward and backward) against the CPU reference in fp32, for fp32,
// fp16 and bf16 working types, on fresh random inputs with NaN-poisoned outputs, and odd
// shapes. Dropout masks must select exactly the CPU's elements. Tolerances: tol(dt) in
// cuda_test_util.h (fp32 1e-5, fp16 1e-3, bf16 1e-2: one rounding of the output), with the
// exceptions justified where they are used. fp32 outputs (statistics, parameter gradients)
// are compared with fp32 tolerances whatever dt is, since both sides accumulate the same
// rounded inputs in fp32.
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <tuple>

#include "cuda/cuda_test_util.h"
#include "layers/kernels/cuda/cuda_ops.h"
#include "runtime/error.h"
#include "test_util.h"

using namespace lstest;
using ls::Activation;
using ls::DropoutKey;

namespace {

DropoutKey key_for(uint64_t site) {
  return DropoutKey{0x1234abcdULL + site, 77 + 3 * site};
}

// Sums over n terms in a different order: ~sqrt(n) * 6e-8 relative; 1e-4 covers n up to
// ~1e6 with cancellation (parameter gradients summed over many rows).
constexpr double kSumTol = 1e-4;

}  // namespace

TEST_CASE("cuda cast and add_inplace are exact conversions") {
  ls::CudaOps cuda(0, nullptr);
  const size_t n = 1037;
  auto x = randn(n, 3.f);
  for (DType dt : working_types()) {
    INFO("dtype " << dtype_str(dt));
    DevBuf src = upload(x, DType::F32), dst = poisoned(n, dt), back = poisoned(n, DType::F32);
    cuda.cast(src.p, DType::F32, dst.p, dt, n);
    cuda.cast(dst.p, dt, back.p, DType::F32, n);
    auto got = download(back, DType::F32, n);
    auto want = rounded(dt, x);
    CHECK(rel_err(got, want) == 0.0);
    auto y = rounded(dt, randn(n));
    DevBuf dy = upload(y, dt), dx = upload(rounded(dt, x), dt);
    cuda.add_inplace(dy.p, dx.p, dt, n);
    auto sum = download(dy, dt, n);
    std::vector<float> ref(n);
    for (size_t i = 0; i < n; ++i) ref[i] = round_to(dt, y[i] + round_to(dt, x[i]));
    CHECK(rel_err(sum, ref) == 0.0);
  }
  DevBuf d(8);
  CHECK_THROWS_AS(cuda.cast(d.p, DType::F64, d.p, DType::F32, 1), ls::Error);
}

TEST_CASE("cuda embedding forward/backward match the CPU reference") {
  auto cpu = ls::make_cpu_ops();
  ls::CudaOps cuda(0, nullptr);
  DevBuf workspace(1u << 20);  // the sinusoid rows (at most 2 x 513 x 36 floats here)
  struct Shape {
    int64_t batch, len, dim;
  };
  // dim 30: the scalar atomics (a row not a multiple of 4 columns); the others the 16-byte ones
  // on sm_90.
  for (Shape s :
       {Shape{1, 1, 64}, Shape{7, 37, 512}, Shape{37, 7, 64}, Shape{2, 513, 36}, Shape{3, 5, 30}}) {
    for (bool learned : {false, true})
      for (float p : {0.f, 0.1f})
        for (DType dt : working_types()) {
          CAPTURE(s.batch);
          CAPTURE(s.len);
          CAPTURE(s.dim);
          CAPTURE(learned);
          CAPTURE(p);
          INFO("dtype " << dtype_str(dt));
          const int64_t vocab = 101, rows = s.batch * s.len, maxpos = s.len + 8;
          std::uniform_int_distribution<int> tokd(0, int(vocab - 1));
          std::vector<int32_t> tokens(static_cast<size_t>(rows), 0);
          for (auto& t : tokens) t = tokd(rng());
          // Trailing padding in some rows (padding_idx 1), and a padding token inside one.
          for (int64_t b = 0; b < s.batch; b += 2)
            for (int64_t l = s.len - s.len / 3; l < s.len; ++l) tokens[size_t(b * s.len + l)] = 1;
          if (rows > 2) tokens[1] = 1;
          ls::EmbeddingArgs a;
          a.tokens = tokens.data();
          a.batch = s.batch;
          a.len = s.len;
          a.dim = s.dim;
          a.vocab = vocab;
          a.padding_idx = 1;
          a.scale = std::sqrt(float(s.dim));
          a.dt = DType::F32;
          a.dropout = p;
          a.key = key_for(1);
          auto table = rounded(dt, randn(size_t(vocab * s.dim)));
          auto pos = rounded(dt, randn(size_t(maxpos * s.dim)));
          if (learned) {
            a.learned_positions = pos.data();
            a.max_positions = maxpos;
          }
          std::vector<float> out_ref(size_t(rows * s.dim));
          cpu->embedding_forward(a, table.data(), out_ref.data());

          DevBuf dtok = upload_raw(tokens), dtable = upload(table, dt), dpos = upload(pos, dt);
          DevBuf dout = poisoned(size_t(rows * s.dim), dt);
          ls::EmbeddingArgs ad = a;
          ad.tokens = dtok.as<int32_t>();
          ad.dt = dt;
          ad.learned_positions = learned ? dpos.p : nullptr;
          cuda.embedding_forward(ad, dtable.p, dout.p);
          auto out = download(dout, dt, out_ref.size());
          // fp32: the sinusoid is evaluated in double on both sides, so only the final
          // fp32 rounding differs: tol(F32).
          CHECK_CLOSE(out, out_ref, tol(dt));
          if (p > 0) {
            CHECK(zero_mismatches(out, rounded(dt, out_ref)) == 0);
            CHECK(zero_count(out_ref) > 0);
          }
          if (!learned) {
            // With a workspace the sinusoid rows are computed once per position first; one
            // float too small for them, each element evaluates its own. Both give the bits of
            // the per-element form above.
            const size_t rows_bytes = size_t(s.len * s.dim) * sizeof(float);
            for (size_t ws_bytes : {size_t(workspace.bytes), rows_bytes, rows_bytes - 4}) {
              CAPTURE(ws_bytes);
              cuda.set_workspace(workspace.p, ws_bytes);
              DevBuf dout2 = poisoned(size_t(rows * s.dim), dt);
              cuda.embedding_forward(ad, dtable.p, dout2.p);
              CHECK(download(dout2, dt, out_ref.size()) == out);
            }
            cuda.set_workspace(nullptr, 0);
          }

          // Backward: both paths, accumulating into non-zero fp32 gradients.
          auto d_out = rounded(dt, randn(out_ref.size()));
          auto dtab0 = randn(size_t(vocab * s.dim)), dpos0 = randn(size_t(maxpos * s.dim));
          std::vector<float> dtab_ref = dtab0, dpos_ref = dpos0;
          cpu->embedding_backward(a, d_out.data(), dtab_ref.data(),
                                  learned ? dpos_ref.data() : nullptr, true);
          DevBuf dd = upload(d_out, dt);
          for (bool det : {false, true}) {
            INFO("deterministic " << det);
            DevBuf gt = upload(dtab0, DType::F32), gp = upload(dpos0, DType::F32);
            cuda.embedding_backward(ad, dd.p, gt.p, learned ? gp.p : nullptr, det);
            CHECK_CLOSE(download(gt, DType::F32, dtab0.size()), dtab_ref, tol(DType::F32));
            if (learned)
              CHECK_CLOSE(download(gp, DType::F32, dpos0.size()), dpos_ref, tol(DType::F32));
            if (det) {
              // Bitwise reproducible: a second run from the same start gives the same bits.
              DevBuf gt2 = upload(dtab0, DType::F32);
              cuda.embedding_backward(ad, dd.p, gt2.p, nullptr, true);
              DevBuf gt3 = upload(dtab0, DType::F32);
              cuda.embedding_backward(ad, dd.p, gt3.p, nullptr, true);
              CHECK(download(gt2, DType::F32, dtab0.size()) ==
                    download(gt3, DType::F32, dtab0.size()));
            }
          }
        }
  }
}

TEST_CASE("cuda layernorm forward/backward match the CPU reference") {
  auto cpu = ls::make_cpu_ops();
  ls::CudaOps cuda(0, nullptr);
  DevBuf workspace(32u << 20);  // deterministic partial sums (a few MiB for these shapes)
  struct Shape {
    int64_t rows, cols;
  };
  // 37 and 100 columns: unvectorised paths; 16384: the parameter-gradient kernel for rows too
  // long for shared partials; 8192: shared partials above 48 KiB.
  // Backward register path (up to 8192 columns in fp16/bf16, 4096 in fp32) boundaries: 4096 and
  // 8192 (the largest rows per dtype: 8 warps per row), 4097 and 8193 (just past them,
  // unvectorised: the fallback in fp32 / fp16), 1032 and 2049 (2 to 8 warps per row, packs
  // partly past the row's end). 5000 x 64 and 4099 x 768: more rows than the grid has row
  // teams, so teams walk several rows and carry their column partials across them.
  for (Shape s : {Shape{1, 64}, Shape{7, 512}, Shape{37, 1024}, Shape{513, 37}, Shape{37, 100},
                  Shape{7, 8192}, Shape{3, 16384}, Shape{9, 4096}, Shape{5, 4097}, Shape{11, 1032},
                  Shape{13, 2049}, Shape{5000, 64}, Shape{4099, 768}, Shape{3, 8193}}) {
    for (bool with_res : {false, true})
      for (DType dt : working_types()) {
        CAPTURE(s.rows);
        CAPTURE(s.cols);
        CAPTURE(with_res);
        INFO("dtype " << dtype_str(dt));
        const size_t n = size_t(s.rows * s.cols);
        auto x = rounded(dt, randn(n, 2.f));
        for (size_t i = 0; i < n; ++i) x[i] = round_to(dt, x[i] + 0.5f);  // non-zero mean
        auto gamma = rounded(dt, uniform(size_t(s.cols), 0.5f, 1.5f));
        auto beta = rounded(dt, randn(size_t(s.cols)));
        const float eps = 1e-5f;
        std::vector<float> y_ref(n), mean_ref(size_t(s.rows)), rstd_ref(size_t(s.rows));
        cpu->layernorm_forward(x.data(), gamma.data(), beta.data(), y_ref.data(), mean_ref.data(),
                               rstd_ref.data(), s.rows, s.cols, eps, DType::F32);
        DevBuf dx_in = upload(x, dt), dg = upload(gamma, dt), db = upload(beta, dt);
        DevBuf dy_out = poisoned(n, dt), dmean = poisoned(size_t(s.rows), DType::F32),
               drstd = poisoned(size_t(s.rows), DType::F32);
        cuda.layernorm_forward(dx_in.p, dg.p, db.p, dy_out.p, dmean.p, drstd.p, s.rows, s.cols, eps,
                               dt);
        const auto y_dev = download(dy_out, dt, n);
        CHECK_CLOSE(y_dev, y_ref, tol(dt));
        CHECK_CLOSE(download(dmean, DType::F32, size_t(s.rows)), mean_ref, tol(DType::F32));
        CHECK_CLOSE(download(drstd, DType::F32, size_t(s.rows)), rstd_ref, tol(DType::F32));

        auto dy = rounded(dt, randn(n));
        auto dres = rounded(dt, randn(n));
        auto dgamma0 = randn(size_t(s.cols)), dbeta0 = randn(size_t(s.cols));
        std::vector<float> dx_ref(n), dgamma_ref = dgamma0, dbeta_ref = dbeta0;
        cpu->layernorm_backward(dy.data(), x.data(), gamma.data(), mean_ref.data(), rstd_ref.data(),
                                with_res ? dres.data() : nullptr, dx_ref.data(), dgamma_ref.data(),
                                dbeta_ref.data(), s.rows, s.cols, DType::F32);
        // The backward from the output: the CUDA side gets its forward's own y and rstd (as in
        // training), the CPU reference the same y (y_dev: y_ref rounded to dt, to within the
        // forward's tolerance) and rstd_ref. A different y on the two sides would carry a
        // rounding of y into xhat = (y - beta) / gamma and so into d_gamma, compared with fp32
        // tolerances. gamma from uniform(0.5, 1.5) keeps 1 / gamma <= 2, so dividing by it
        // amplifies the remaining rounding (of the statistics, of 1 / gamma and -beta / gamma)
        // at most 2x, and the tolerances of the check from the input apply unchanged.
        std::vector<float> dx_out_ref(n), dgamma_out_ref = dgamma0, dbeta_out_ref = dbeta0;
        cpu->layernorm_backward_from_output(dy.data(), y_dev.data(), gamma.data(), beta.data(),
                                            rstd_ref.data(), with_res ? dres.data() : nullptr,
                                            dx_out_ref.data(), dgamma_out_ref.data(),
                                            dbeta_out_ref.data(), s.rows, s.cols, DType::F32);
        DevBuf ddy = upload(dy, dt), ddres = upload(dres, dt);
        // d_gamma / d_beta with atomics, then with the fixed-order sums (the workspace holds
        // the per-block partials; bitwise repeatable, and the second call also shows that the
        // in-kernel reduction left its counters ready for the next launch).
        for (bool det : {false, true}) {
          INFO("deterministic " << det);
          cuda.set_workspace(det ? workspace.p : nullptr, det ? workspace.bytes : 0);
          cuda.set_deterministic(det);
          DevBuf ddx = poisoned(n, dt);
          DevBuf ddg = upload(dgamma0, DType::F32), ddb = upload(dbeta0, DType::F32);
          // The CUDA backward gets its own saved statistics (as in training).
          cuda.layernorm_backward(ddy.p, dx_in.p, dg.p, dmean.p, drstd.p,
                                  with_res ? ddres.p : nullptr, ddx.p, ddg.p, ddb.p, s.rows, s.cols,
                                  dt);
          // dx = rstd * (g - mean(g) - xhat mean(g xhat)): the two means cancel part of g, so
          // fp32 rounding of the statistics is amplified by up to ~10x before the output is
          // rounded: fp32 1e-4; fp16/bf16 keep one output rounding.
          CHECK_CLOSE(download(ddx, dt, n), dx_ref, dt == DType::F32 ? 1e-4 : tol(dt));
          const auto got_g = download(ddg, DType::F32, size_t(s.cols));
          const auto got_b = download(ddb, DType::F32, size_t(s.cols));
          CHECK_CLOSE(got_g, dgamma_ref, kSumTol);
          CHECK_CLOSE(got_b, dbeta_ref, kSumTol);
          if (det) {
            DevBuf ddx2 = poisoned(n, dt);
            DevBuf ddg2 = upload(dgamma0, DType::F32), ddb2 = upload(dbeta0, DType::F32);
            cuda.layernorm_backward(ddy.p, dx_in.p, dg.p, dmean.p, drstd.p,
                                    with_res ? ddres.p : nullptr, ddx2.p, ddg2.p, ddb2.p, s.rows,
                                    s.cols, dt);
            CHECK(download(ddg2, DType::F32, size_t(s.cols)) == got_g);
            CHECK(download(ddb2, DType::F32, size_t(s.cols)) == got_b);
          }

          // With the output recomputed (layernorm_backward_with_output): the same dx, bit for
          // bit (the same expressions, one more store), the parameter gradients to the same
          // tolerance (their summation order may differ: the variant's blocks take more shared
          // memory, so the grid may differ), and y bit for bit the forward's.
          const auto got_dx = download(ddx, dt, n);
          DevBuf wdx = poisoned(n, dt), wy = poisoned(n, dt);
          DevBuf wdg = upload(dgamma0, DType::F32), wdb = upload(dbeta0, DType::F32);
          cuda.layernorm_backward_with_output(ddy.p, dx_in.p, dg.p, db.p, dmean.p, drstd.p,
                                              with_res ? ddres.p : nullptr, wdx.p, wy.p, wdg.p,
                                              wdb.p, s.rows, s.cols, dt);
          CHECK(download(wdx, dt, n) == got_dx);
          CHECK(download(wy, dt, n) == y_dev);
          CHECK_CLOSE(download(wdg, DType::F32, size_t(s.cols)), dgamma_ref, kSumTol);
          CHECK_CLOSE(download(wdb, DType::F32, size_t(s.cols)), dbeta_ref, kSumTol);

          // From the output, with the same checks.
          DevBuf odx = poisoned(n, dt);
          DevBuf odg = upload(dgamma0, DType::F32), odb = upload(dbeta0, DType::F32);
          cuda.layernorm_backward_from_output(ddy.p, dy_out.p, dg.p, db.p, drstd.p,
                                              with_res ? ddres.p : nullptr, odx.p, odg.p, odb.p,
                                              s.rows, s.cols, dt);
          const auto out_dx = download(odx, dt, n);
          const auto out_g = download(odg, DType::F32, size_t(s.cols));
          const auto out_b = download(odb, DType::F32, size_t(s.cols));
          CHECK_CLOSE(out_dx, dx_out_ref, dt == DType::F32 ? 1e-4 : tol(dt));
          CHECK_CLOSE(out_g, dgamma_out_ref, kSumTol);
          CHECK_CLOSE(out_b, dbeta_out_ref, kSumTol);
          // Against the backward from the input: the two agree up to the rounding of y to dt.
          // It reaches d_gamma through xhat: relative error at most u * rms(y / gamma) /
          // rms(xhat) ~ 1.5u here (u the unit roundoff, 5e-4 in fp16, 4e-3 in bf16; beta ~
          // N(0, 1)), so d_gamma is held to tol(dt) (kSumTol in fp32, where y is not rounded).
          // dx (whose xhat term is scaled by mean(g xhat), ~1 / sqrt(cols)) and d_beta keep
          // their tolerances.
          CHECK_CLOSE(out_dx, dx_ref, dt == DType::F32 ? 1e-4 : tol(dt));
          CHECK_CLOSE(out_g, dgamma_ref, dt == DType::F32 ? kSumTol : tol(dt));
          CHECK_CLOSE(out_b, dbeta_ref, kSumTol);
          if (det) {
            DevBuf odx2 = poisoned(n, dt);
            DevBuf odg2 = upload(dgamma0, DType::F32), odb2 = upload(dbeta0, DType::F32);
            cuda.layernorm_backward_from_output(ddy.p, dy_out.p, dg.p, db.p, drstd.p,
                                                with_res ? ddres.p : nullptr, odx2.p, odg2.p,
                                                odb2.p, s.rows, s.cols, dt);
            CHECK(download(odg2, DType::F32, size_t(s.cols)) == out_g);
            CHECK(download(odb2, DType::F32, size_t(s.cols)) == out_b);
          }
        }
        cuda.set_workspace(nullptr, 0);
        cuda.set_deterministic(true);
      }
  }
}

TEST_CASE("cuda layernorm backward with the output rejects a null beta or y, naming them") {
  ls::CudaOps cuda(0, nullptr);
  DevBuf buf = upload(std::vector<float>(8, 1.f), DType::F32);
  void* p = buf.p;
  for (auto [beta, y, name] :
       {std::tuple<const void*, void*, const char*>{nullptr, p, "beta"}, {p, nullptr, "y"}}) {
    CAPTURE(name);
    bool threw = false;
    try {
      cuda.layernorm_backward_with_output(p, p, p, beta, p, p, nullptr, p, y, p, p, 2, 4,
                                          DType::F32);
    } catch (const ls::Error& e) {
      threw = true;
      CHECK(e.status() == LS_ERR_INVALID_ARGUMENT);
      CHECK(std::string(e.what()).find(std::string("layernorm_backward_with_output: ") + name +
                                       " is null") != std::string::npos);
    }
    CHECK(threw);
  }
}

TEST_CASE("cuda layernorm forward rejects a negative or NaN eps and leaves y untouched") {
  ls::CudaOps cuda(0, nullptr);
  const int64_t rows = 2, cols = 8;
  DevBuf x = upload(std::vector<float>(rows * cols, 1.f), DType::F32);
  DevBuf gamma = upload(std::vector<float>(cols, 1.f), DType::F32);
  DevBuf beta = upload(std::vector<float>(cols, 0.f), DType::F32);
  DevBuf y = upload(std::vector<float>(rows * cols, 7.f), DType::F32);
  DevBuf stats = upload(std::vector<float>(2 * rows, 0.f), DType::F32);
  float* mean = static_cast<float*>(stats.p);
  for (float eps : {-1e-5f, std::nanf("")}) {
    CAPTURE(eps);
    bool threw = false;
    try {
      cuda.layernorm_forward(x.p, gamma.p, beta.p, y.p, mean, mean + rows, rows, cols, eps,
                             DType::F32);
    } catch (const ls::Error& e) {
      threw = true;
      CHECK(e.status() == LS_ERR_INVALID_ARGUMENT);
      CHECK(std::string(e.what()).find("layernorm_forward: eps = ") != std::string::npos);
      CHECK(std::string(e.what()).find("must be >= 0") != std::string::npos);
    }
    CHECK(threw);
  }
  cuda.synchronize();
  CHECK(download(y, DType::F32, rows * cols) == std::vector<float>(rows * cols, 7.f));
}

TEST_CASE("cuda bias_dropout_residual_layernorm_forward: the two ops' bits, the CPU reference") {
  auto cpu = ls::make_cpu_ops();
  ls::CudaOps cuda(0, nullptr);
  struct Shape {
    int64_t rows, cols;
  };
  // The fused kernel (fp16/bf16, cols % 8 == 0, <= 2048): 1, 2, 4 and 8 packs per lane, full
  // (256, 1024, 2048) and partly past the row (200, 520, 768); more rows than a block's 4 (513).
  // The two-kernel path: fp32, cols % 8 != 0 (100), rows past 2048 columns (2056).
  for (Shape s : {Shape{1, 64}, Shape{7, 200}, Shape{5, 256}, Shape{6, 520}, Shape{3, 768},
                  Shape{513, 1024}, Shape{5, 2048}, Shape{11, 100}, Shape{9, 2056}}) {
    for (float p : {0.f, 0.1f})
      for (bool with_bias : {true, false})
        for (DType dt : working_types()) {
          CAPTURE(s.rows);
          CAPTURE(s.cols);
          CAPTURE(p);
          CAPTURE(with_bias);
          INFO("dtype " << dtype_str(dt));
          const size_t n = size_t(s.rows * s.cols), nc = size_t(s.cols), nr = size_t(s.rows);
          const float eps = 1e-5f;
          auto x = rounded(dt, randn(n)), res = rounded(dt, randn(n, 2.f));
          auto bias = rounded(dt, randn(nc));
          auto gamma = rounded(dt, uniform(nc, 0.5f, 1.5f)), beta = rounded(dt, randn(nc));
          DevBuf dx = upload(x, dt), dres = upload(res, dt), dbias = upload(bias, dt),
                 dg = upload(gamma, dt), db = upload(beta, dt);
          const void* bp = with_bias ? dbias.p : nullptr;
          DevBuf out = poisoned(n, dt), y = poisoned(n, dt), mean = poisoned(nr, DType::F32),
                 rstd = poisoned(nr, DType::F32);
          cuda.bias_dropout_residual_layernorm_forward(dx.p, bp, dres.p, out.p, dg.p, db.p, y.p,
                                                       mean.p, rstd.p, s.rows, s.cols, p,
                                                       key_for(3), eps, dt);
          const auto got_out = download(out, dt, n), got_y = download(y, dt, n);
          const auto got_mean = download(mean, DType::F32, nr);
          const auto got_rstd = download(rstd, DType::F32, nr);
          // Reference: the block output in fp32, then the LayerNorm of the values the device
          // stored (got_out: within tol(dt) of the reference output, but a one-ulp difference
          // in an element that cancels in a row's mean would exceed fp32 tolerances there).
          std::vector<float> out_ref(n), y_ref(n), mean_ref(nr), rstd_ref(nr);
          cpu->bias_dropout_residual_forward(x.data(), with_bias ? bias.data() : nullptr,
                                             res.data(), out_ref.data(), s.rows, s.cols, p,
                                             key_for(3), DType::F32);
          cpu->layernorm_forward(got_out.data(), gamma.data(), beta.data(), y_ref.data(),
                                 mean_ref.data(), rstd_ref.data(), s.rows, s.cols, eps,
                                 DType::F32);
          CHECK_CLOSE(got_out, out_ref, tol(dt));
          CHECK_CLOSE(got_y, y_ref, tol(dt));
          CHECK_CLOSE(got_mean, mean_ref, tol(DType::F32));
          CHECK_CLOSE(got_rstd, rstd_ref, tol(DType::F32));
          // The same bits as bias_dropout_residual_forward, then layernorm_forward.
          DevBuf out2 = poisoned(n, dt), y2 = poisoned(n, dt), mean2 = poisoned(nr, DType::F32),
                 rstd2 = poisoned(nr, DType::F32);
          cuda.bias_dropout_residual_forward(dx.p, bp, dres.p, out2.p, s.rows, s.cols, p,
                                             key_for(3), dt);
          cuda.layernorm_forward(out2.p, dg.p, db.p, y2.p, mean2.p, rstd2.p, s.rows, s.cols, eps,
                                 dt);
          CHECK(download(out2, dt, n) == got_out);
          CHECK(download(y2, dt, n) == got_y);
          CHECK(download(mean2, DType::F32, nr) == got_mean);
          CHECK(download(rstd2, DType::F32, nr) == got_rstd);
          // out may alias the residual.
          DevBuf alias = upload(res, dt), y3 = poisoned(n, dt);
          cuda.bias_dropout_residual_layernorm_forward(dx.p, bp, alias.p, alias.p, dg.p, db.p, y3.p,
                                                       mean.p, rstd.p, s.rows, s.cols, p,
                                                       key_for(3), eps, dt);
          CHECK(download(alias, dt, n) == got_out);
          CHECK(download(y3, dt, n) == got_y);
        }
  }
  // Refused before anything runs: out keeps its poison.
  DevBuf b = upload(std::vector<float>(64, 1.f), DType::F16);
  DevBuf out = poisoned(64, DType::F16);
  auto call = [&](const void* gamma, void* yy, DType dt) {
    return [&, gamma, yy, dt] {
      cuda.bias_dropout_residual_layernorm_forward(b.p, nullptr, b.p, out.p, gamma, b.p, yy, b.p,
                                                   b.p, 2, 32, 0.1f, key_for(3), 1e-5f, dt);
    };
  };
  DevBuf y = poisoned(64, DType::F16);
  const std::string name = "bias_dropout_residual_layernorm_forward: ";
  for (auto [f, status, text] :
       {std::tuple<std::function<void()>, ls_status, std::string>{
            call(nullptr, y.p, DType::F16), LS_ERR_INVALID_ARGUMENT, "gamma is null"},
        {call(b.p, out.p, DType::F16), LS_ERR_INVALID_ARGUMENT, "y must not alias"},
        {call(b.p, y.p, DType::F64), LS_ERR_UNSUPPORTED, ""}}) {
    CAPTURE(text);
    CHECK(ls::test::status_of(f) == status);
    if (!text.empty()) CHECK(ls::test::error_message(f).find(name + text) != std::string::npos);
    CHECK(zero_count(download(out, DType::F16, 64)) == 0);
    CHECK(std::isnan(download(out, DType::F16, 64)[0]));
  }
}

TEST_CASE("cuda dropout fusions match the CPU reference, masks included") {
  auto cpu = ls::make_cpu_ops();
  ls::CudaOps cuda(0, nullptr);
  struct Shape {
    int64_t rows, cols;
  };
  for (Shape s : {Shape{1, 64}, Shape{7, 37}, Shape{37, 512}, Shape{513, 1024}, Shape{37, 7}}) {
    for (float p : {0.f, 0.25f})
      for (DType dt : working_types()) {
        CAPTURE(s.rows);
        CAPTURE(s.cols);
        CAPTURE(p);
        INFO("dtype " << dtype_str(dt));
        const size_t n = size_t(s.rows * s.cols), nc = size_t(s.cols);
        auto x = rounded(dt, randn(n)), res = rounded(dt, randn(n)), bias = rounded(dt, randn(nc));
        DevBuf dx = upload(x, dt), dres = upload(res, dt), dbias = upload(bias, dt);

        {  // bias_dropout_residual_forward (out aliasing residual too)
          for (bool with_bias : {true, false}) {
            std::vector<float> ref(n);
            cpu->bias_dropout_residual_forward(x.data(), with_bias ? bias.data() : nullptr,
                                               res.data(), ref.data(), s.rows, s.cols, p,
                                               key_for(2), DType::F32);
            DevBuf out = poisoned(n, dt);
            cuda.bias_dropout_residual_forward(dx.p, with_bias ? dbias.p : nullptr, dres.p, out.p,
                                               s.rows, s.cols, p, key_for(2), dt);
            auto got = download(out, dt, n);
            CHECK_CLOSE(got, ref, tol(dt));
            // The mask: with a zero residual, exactly the dropped elements are zero.
            if (p > 0) {
              std::vector<float> zeros(n, 0.f), ref0(n);
              cpu->bias_dropout_residual_forward(x.data(), with_bias ? bias.data() : nullptr,
                                                 zeros.data(), ref0.data(), s.rows, s.cols, p,
                                                 key_for(2), DType::F32);
              DevBuf dz = upload(zeros, dt), out0 = poisoned(n, dt);
              cuda.bias_dropout_residual_forward(dx.p, with_bias ? dbias.p : nullptr, dz.p, out0.p,
                                                 s.rows, s.cols, p, key_for(2), dt);
              CHECK(zero_mismatches(download(out0, dt, n), rounded(dt, ref0)) == 0);
            }
            DevBuf alias = upload(res, dt);
            cuda.bias_dropout_residual_forward(dx.p, with_bias ? dbias.p : nullptr, alias.p,
                                               alias.p, s.rows, s.cols, p, key_for(2), dt);
            CHECK(download(alias, dt, n) == got);
          }
        }
        {  // dropout_bias_backward and bias_grad
          auto d0 = randn(nc);
          std::vector<float> dx_ref(n), db_ref = d0;
          cpu->dropout_bias_backward(x.data(), dx_ref.data(), db_ref.data(), s.rows, s.cols, p,
                                     key_for(3), DType::F32);
          DevBuf ddx = poisoned(n, dt), ddb = upload(d0, DType::F32);
          cuda.dropout_bias_backward(dx.p, ddx.p, ddb.p, s.rows, s.cols, p, key_for(3), dt);
          auto got = download(ddx, dt, n);
          CHECK_CLOSE(got, dx_ref, tol(dt));
          if (p > 0) CHECK(zero_mismatches(got, rounded(dt, dx_ref)) == 0);
          CHECK_CLOSE(download(ddb, DType::F32, nc), db_ref, kSumTol);
          DevBuf ddx2 = poisoned(n, dt);
          cuda.dropout_bias_backward(dx.p, ddx2.p, nullptr, s.rows, s.cols, p, key_for(3), dt);
          CHECK(download(ddx2, dt, n) == got);

          std::vector<float> bg_ref = d0;
          cpu->bias_grad(x.data(), bg_ref.data(), s.rows, s.cols, DType::F32);
          DevBuf dbg = upload(d0, DType::F32);
          cuda.bias_grad(dx.p, dbg.p, s.rows, s.cols, dt);
          CHECK_CLOSE(download(dbg, DType::F32, nc), bg_ref, kSumTol);
        }
        {  // act_dropout forward/backward and dropout_forward
          for (Activation act : {Activation::ReLU, Activation::GELU}) {
            CAPTURE(int(act));
            std::vector<float> ref(n);
            cpu->act_dropout_forward(x.data(), ref.data(), s.rows, s.cols, act, p, key_for(4),
                                     DType::F32);
            DevBuf out = poisoned(n, dt);
            cuda.act_dropout_forward(dx.p, out.p, s.rows, s.cols, act, p, key_for(4), dt);
            auto got = download(out, dt, n);
            CHECK_CLOSE(got, ref, tol(dt));
            CHECK(mask_mismatches(got, ref, dt) == 0);

            auto g = rounded(dt, randn(n));
            auto d0 = randn(nc);
            std::vector<float> dpre_ref(n), db_ref = d0;
            cpu->act_dropout_backward(g.data(), x.data(), dpre_ref.data(), db_ref.data(), s.rows,
                                      s.cols, act, p, key_for(4), DType::F32);
            DevBuf dg = upload(g, dt), ddpre = poisoned(n, dt), ddb = upload(d0, DType::F32);
            cuda.act_dropout_backward(dg.p, dx.p, ddpre.p, ddb.p, s.rows, s.cols, act, p,
                                      key_for(4), dt);
            auto gpre = download(ddpre, dt, n);
            CHECK_CLOSE(gpre, dpre_ref, tol(dt));
            CHECK(mask_mismatches(gpre, dpre_ref, dt) == 0);
            CHECK_CLOSE(download(ddb, DType::F32, nc), db_ref, kSumTol);
          }
          std::vector<float> ref(n);
          cpu->dropout_forward(x.data(), ref.data(), n, p, key_for(5), DType::F32);
          DevBuf inplace = upload(x, dt);
          cuda.dropout_forward(inplace.p, inplace.p, n, p, key_for(5), dt);
          auto got = download(inplace, dt, n);
          CHECK_CLOSE(got, ref, tol(dt));
          CHECK(mask_mismatches(got, ref, dt) == 0);
          if (p > 0 && n > 100) CHECK(zero_count(ref) > 0);
        }
      }
  }
  // An activation code outside the enum is refused before any kernel runs (the shared
  // check_activation), by the elementwise ops and by the GEMM's activation epilogues.
  DevBuf d(64);
  const auto bad = static_cast<ls::Activation>(7);
  auto refused = [](auto f) {
    CHECK(ls::test::status_of(f) == LS_ERR_INVALID_ARGUMENT);
    CHECK(ls::test::error_message(f).find("unknown activation 7") != std::string::npos);
  };
  refused([&] { cuda.act_dropout_forward(d.p, d.p, 2, 8, bad, 0.f, key_for(1), DType::F16); });
  refused([&] {
    cuda.act_dropout_backward(d.p, d.p, d.p, nullptr, 2, 8, bad, 0.f, key_for(1), DType::F16);
  });
  ls::GemmArgs g;
  g.m = g.n = g.k = 2;
  g.a = g.b = g.c = g.aux = d.p;
  g.lda = g.ldb = g.ldc = 2;
  g.ab_type = g.c_type = DType::F32;
  g.epilogue = ls::Epilogue::BiasAct;
  g.bias = d.p;
  g.act = bad;
  refused([&] { cuda.gemm(g); });
}

TEST_CASE("cuda relu_dropout_backward_from_output matches the CPU reference and act_dropout") {
  // The FFN's ReLU path: forward in place (out aliasing pre), backward from the saved output.
  // d_pre is one product rounded to dt (tol(dt)); its zeros (relu' = 0 or dropped) must be
  // exactly the reference's. Against CUDA's act_dropout_backward(ReLU) given pre and the key,
  // the products are the same fp32 values (g * scale * 1 vs g * scale), so d_pre agrees
  // bitwise; d_bias to kSumTol (the two kernels may be launched with different grids, hence
  // different summation orders); the same op twice in deterministic mode gives the same bits.
  auto cpu = ls::make_cpu_ops();
  ls::CudaOps cuda(0, nullptr);
  DevBuf workspace(32u << 20);
  struct Shape {
    int64_t rows, cols;
  };
  for (Shape s : {Shape{1, 64}, Shape{7, 37}, Shape{37, 512}, Shape{513, 1024}, Shape{37, 7},
                  Shape{1031, 4096}}) {
    for (float p : {0.f, 0.1f})
      for (DType dt : working_types()) {
        CAPTURE(s.rows);
        CAPTURE(s.cols);
        CAPTURE(p);
        INFO("dtype " << dtype_str(dt));
        const size_t n = size_t(s.rows * s.cols), nc = size_t(s.cols);
        auto x = rounded(dt, randn(n));
        for (size_t i = 0; i < n; i += 7) x[i] = 0.f;  // ReLU's kink: relu'(0) = 0 everywhere
        std::vector<float> out_ref(n);
        cpu->act_dropout_forward(x.data(), out_ref.data(), s.rows, s.cols, Activation::ReLU, p,
                                 key_for(6), DType::F32);
        DevBuf dx = upload(x, dt), dout = upload(x, dt);
        cuda.act_dropout_forward(dout.p, dout.p, s.rows, s.cols, Activation::ReLU, p, key_for(6),
                                 dt);
        auto out = download(dout, dt, n);
        CHECK_CLOSE(out, out_ref, tol(dt));
        CHECK(zero_mismatches(out, rounded(dt, out_ref)) == 0);

        auto g = rounded(dt, randn(n));
        auto d0 = randn(nc);
        std::vector<float> dpre_ref(n), db_ref = d0;
        cpu->relu_dropout_backward_from_output(g.data(), out.data(), dpre_ref.data(), db_ref.data(),
                                               s.rows, s.cols, p, DType::F32);
        DevBuf dg = upload(g, dt);
        for (bool det : {false, true}) {
          INFO("deterministic " << det);
          cuda.set_workspace(det ? workspace.p : nullptr, det ? workspace.bytes : 0);
          cuda.set_deterministic(det);
          DevBuf ddpre = poisoned(n, dt), ddb = upload(d0, DType::F32);
          cuda.relu_dropout_backward_from_output(dg.p, dout.p, ddpre.p, ddb.p, s.rows, s.cols, p,
                                                 dt);
          auto gpre = download(ddpre, dt, n);
          CHECK_CLOSE(gpre, dpre_ref, tol(dt));
          CHECK(mask_mismatches(gpre, dpre_ref, dt) == 0);
          auto db = download(ddb, DType::F32, nc);
          CHECK_CLOSE(db, db_ref, kSumTol);

          DevBuf ddpre2 = poisoned(n, dt), ddb2 = upload(d0, DType::F32);
          cuda.act_dropout_backward(dg.p, dx.p, ddpre2.p, ddb2.p, s.rows, s.cols, Activation::ReLU,
                                    p, key_for(6), dt);
          CHECK(download(ddpre2, dt, n) == gpre);
          CHECK_CLOSE(download(ddb2, DType::F32, nc), db, kSumTol);
          if (det) {
            // Bitwise reproducible: a second run from the same start gives the same bits.
            DevBuf ddb3 = upload(d0, DType::F32), ddpre3 = poisoned(n, dt);
            cuda.relu_dropout_backward_from_output(dg.p, dout.p, ddpre3.p, ddb3.p, s.rows, s.cols,
                                                   p, dt);
            CHECK(download(ddb3, DType::F32, nc) == db);
          }
          // d_pre aliasing d_out, and a null d_bias.
          DevBuf alias = upload(g, dt);
          cuda.relu_dropout_backward_from_output(alias.p, dout.p, alias.p, nullptr, s.rows, s.cols,
                                                 p, dt);
          CHECK(download(alias, dt, n) == gpre);
        }
        cuda.set_workspace(nullptr, 0);
        cuda.set_deterministic(true);
      }
  }
  DevBuf d(8);
  CHECK_THROWS_AS(
      cuda.relu_dropout_backward_from_output(d.p, d.p, d.p, nullptr, 1, 1, 1.f, DType::F16),
      ls::Error);  // p must be < 1
}

TEST_CASE("cuda split/merge heads match the CPU reference") {
  auto cpu = ls::make_cpu_ops();
  ls::CudaOps cuda(0, nullptr);
  struct Shape {
    int64_t n, batch, len, heads, dim;
  };
  for (Shape s : {Shape{3, 7, 37, 4, 64}, Shape{1, 1, 1, 2, 8}, Shape{2, 37, 7, 3, 16},
                  Shape{3, 2, 513, 8, 64}, Shape{1, 3, 5, 2, 6}}) {
    for (DType dt : working_types()) {
      CAPTURE(s.n);
      CAPTURE(s.batch);
      CAPTURE(s.len);
      CAPTURE(s.heads);
      CAPTURE(s.dim);
      INFO("dtype " << dtype_str(dt));
      const size_t total = size_t(s.n * s.batch * s.len * s.heads * s.dim);
      auto in = rounded(dt, randn(total));
      auto bias = rounded(dt, randn(size_t(s.n * s.heads * s.dim)));
      std::vector<float> ref(total), back_ref(total);
      cpu->split_heads(in.data(), bias.data(), ref.data(), s.n, s.batch, s.len, s.heads, s.dim,
                       DType::F32);
      DevBuf din = upload(in, dt), dbias = upload(bias, dt), dout = poisoned(total, dt);
      cuda.split_heads(din.p, dbias.p, dout.p, s.n, s.batch, s.len, s.heads, s.dim, dt);
      auto got = download(dout, dt, total);
      CHECK_CLOSE(got, rounded(dt, ref), tol(dt));
      // merge(split(x)) without bias is the identity, exactly.
      DevBuf split = poisoned(total, dt), merged = poisoned(total, dt);
      cuda.split_heads(din.p, nullptr, split.p, s.n, s.batch, s.len, s.heads, s.dim, dt);
      cuda.merge_heads(split.p, merged.p, s.n, s.batch, s.len, s.heads, s.dim, dt);
      CHECK(download(merged, dt, total) == in);
      cpu->merge_heads(in.data(), back_ref.data(), s.n, s.batch, s.len, s.heads, s.dim, DType::F32);
      DevBuf m2 = poisoned(total, dt);
      cuda.merge_heads(din.p, m2.p, s.n, s.batch, s.len, s.heads, s.dim, dt);
      CHECK(download(m2, dt, total) == back_ref);
    }
  }
}

TEST_CASE("cuda softmax forward/backward match the CPU reference, short and long rows") {
  auto cpu = ls::make_cpu_ops();
  ls::CudaOps cuda(0, nullptr);
  struct Shape {
    int64_t batch, heads, lq, lk;
  };
  // Register path (Lk <= 8192) boundaries: 8192 (256 threads per row) and 8193 (the two-pass
  // long-row path), 2056 (128 threads per row), 33 and 64 (rows sharing a warp: 8 threads per
  // row in fp16, 16 in fp32, with key padding read 8 or 4 bytes at a time when Lk = 64).
  // 3200 x 1040 and 1600 x 1027 (unaligned): many block-wide rows (64 threads each), most of
  // them cut short by the causal mask.
  for (Shape s :
       {Shape{7, 4, 37, 37}, Shape{1, 2, 7, 513}, Shape{2, 2, 3, 1}, Shape{3, 2, 5, 1024},
        Shape{2, 2, 3, 2048}, Shape{1, 2, 3, 4100}, Shape{2, 1, 2, 1027}, Shape{2, 1, 3, 8192},
        Shape{2, 1, 2, 8193}, Shape{1, 3, 5, 2056}, Shape{3, 2, 9, 33}, Shape{3, 3, 50, 64},
        Shape{4, 8, 100, 1040}, Shape{2, 4, 200, 1027}}) {
    for (bool causal : {false, true})
      for (DType dt : working_types()) {
        CAPTURE(s.batch);
        CAPTURE(s.heads);
        CAPTURE(s.lq);
        CAPTURE(s.lk);
        CAPTURE(causal);
        INFO("dtype " << dtype_str(dt));
        const int64_t rows = s.batch * s.heads * s.lq;
        const size_t n = size_t(rows * s.lk);
        auto scores = rounded(dt, randn(n, 3.f));
        // Key padding: the tail of batch 0 and, when batch > 1, every key of the last batch
        // (rows with no visible key must come out as zeros).
        std::vector<uint8_t> pad(size_t(s.batch * s.lk), 0);
        for (int64_t k = s.lk - s.lk / 4; k < s.lk; ++k) pad[size_t(k)] = 1;
        if (s.batch > 1)
          for (int64_t k = 0; k < s.lk; ++k) pad[size_t((s.batch - 1) * s.lk + k)] = 1;
        std::vector<float> ref(n);
        // The reference runs in double (the CPU backend's F64), so the tolerance measures the
        // kernel's fp32 rounding alone, not the reference's own sequential fp32 sums.
        auto to_d = [](const std::vector<float>& v) {
          return std::vector<double>(v.begin(), v.end());
        };
        auto to_f = [](const std::vector<double>& v) {
          return std::vector<float>(v.begin(), v.end());
        };
        {
          std::vector<double> rd(n);
          cpu->softmax_forward(to_d(scores).data(), rd.data(), pad.data(), causal, s.batch, s.heads,
                               s.lq, s.lk, DType::F64);
          ref = to_f(rd);
        }
        DevBuf dscores = upload(scores, dt), dpad = upload_raw(pad), dprobs = poisoned(n, dt);
        cuda.softmax_forward(dscores.p, dprobs.p, dpad.as<uint8_t>(), causal, s.batch, s.heads,
                             s.lq, s.lk, dt);
        auto probs = download(dprobs, dt, n);
        CHECK_CLOSE(probs, ref, tol(dt));
        CHECK(zero_mismatches(probs, rounded(dt, ref)) == 0);
        // In place (probs aliasing scores), no mask.
        std::vector<float> ref2(n);
        {
          std::vector<double> rd(n);
          cpu->softmax_forward(to_d(scores).data(), rd.data(), nullptr, false, s.batch, s.heads,
                               s.lq, s.lk, DType::F64);
          ref2 = to_f(rd);
        }
        DevBuf inplace = upload(scores, dt);
        cuda.softmax_forward(inplace.p, inplace.p, nullptr, false, s.batch, s.heads, s.lq, s.lk,
                             dt);
        CHECK_CLOSE(download(inplace, dt, n), ref2, tol(dt));

        // Backward with the attention dropout, from the probabilities the CUDA forward saved.
        for (float p : {0.f, 0.1f}) {
          CAPTURE(p);
          auto g = rounded(dt, randn(n));
          std::vector<float> ds_ref(n);
          {
            std::vector<double> rd(n);
            cpu->softmax_backward(to_d(g).data(), to_d(probs).data(), rd.data(), rows, s.lk, p,
                                  key_for(6), DType::F64);
            ds_ref = to_f(rd);
          }
          DevBuf dg = upload(g, dt), dds = poisoned(n, dt);
          cuda.softmax_backward(dg.p, dprobs.p, dds.p, rows, s.lk, p, key_for(6), dt);
          auto ds = download(dds, dt, n);
          // d = P (dP - dot): the dot product cancels part of dP; in fp32 the different
          // summation order over up to 4100 keys gives ~sqrt(4100) * 6e-8 = 4e-6 of the terms
          // that cancel, so the error is measured against the larger of ||d|| and ||P dP||
          // (rows that see one key have d = 0 exactly, where a relative error means nothing):
          // 1e-4 for fp32; fp16/bf16 keep one output rounding.
          double num = 0, den = 0, terms = 0;
          for (size_t i = 0; i < n; ++i) {
            REQUIRE(std::isfinite(ds[i]));
            num += (double(ds[i]) - ds_ref[i]) * (double(ds[i]) - ds_ref[i]);
            den += double(ds_ref[i]) * ds_ref[i];
            terms += double(probs[i]) * g[i] * probs[i] * g[i];
          }
          const double err = std::sqrt(num / std::max({den, terms, 1e-30}));
          CHECK_MESSAGE(err <= (dt == DType::F32 ? 1e-4 : tol(dt)), "relative error " << err);
        }
      }
  }
}

TEST_CASE("cuda fused attention forward/backward match the CPU reference (fp16, bf16)") {
  auto cpu = ls::make_cpu_ops();
  ls::CudaOps cuda(0, nullptr);
  DevBuf workspace(size_t(8) << 20);  // deterministic partial sums
  struct Shape {
    bool cross;
    int64_t batch, heads, lq, lk, head_dim;
  };
  // One 64 x 64 tile (the layers' 64-token rows), partial tiles (37, 1, 7), several key tiles
  // (130, 150, 513: the key-tile and dQ kernels; 130 and 150 walk three query tiles, with
  // DP = 32 and 64), head_dim 8 / 32 (the DP = 32 variant), 40 (padded to 64) and 64,
  // cross-attention with Lq != Lk, and no keys at all (Lk = 0).
  const Shape shapes[] = {{false, 2, 2, 64, 64, 64},   {false, 3, 2, 37, 37, 64},
                          {false, 2, 1, 130, 130, 32}, {false, 1, 2, 150, 150, 64},
                          {false, 1, 3, 1, 1, 8},      {true, 2, 2, 7, 513, 40},
                          {true, 2, 1, 70, 64, 64},    {true, 1, 2, 3, 0, 16}};
  for (const Shape& s : shapes)
    for (bool causal : {false, true})
      for (float p : {0.f, 0.1f})
        for (DType dt : {DType::F16, DType::BF16}) {
          if (causal && s.cross) continue;  // decoder self-attention only
          CAPTURE(s.cross);
          CAPTURE(s.batch);
          CAPTURE(s.heads);
          CAPTURE(s.lq);
          CAPTURE(s.lk);
          CAPTURE(s.head_dim);
          CAPTURE(causal);
          CAPTURE(p);
          INFO("dtype " << dtype_str(dt));
          const int64_t hd = s.heads * s.head_dim, Tq = s.batch * s.lq, Tk = s.batch * s.lk;
          // Token-major projections as the layers pack them.
          const int64_t ld_q = s.cross ? hd : 3 * hd, ld_kv = s.cross ? 2 * hd : 3 * hd;
          auto qbuf = rounded(dt, randn(size_t(Tq * ld_q)));
          auto kvbuf = s.cross ? rounded(dt, randn(size_t(Tk * ld_kv))) : std::vector<float>{};
          std::vector<uint8_t> pad(size_t(s.batch * s.lk), 0);
          for (int64_t k = s.lk - s.lk / 4; k < s.lk; ++k) pad[size_t(k)] = 1;  // batch 0's tail
          if (s.batch > 1 && s.lk > 0) pad[size_t(s.batch * s.lk - 1)] = 1;
          auto d_ctx = rounded(dt, randn(size_t(Tq * hd)));

          // CPU reference in double on the same rounded values.
          std::vector<double> qd(qbuf.begin(), qbuf.end()), kvd(kvbuf.begin(), kvbuf.end());
          std::vector<double> gd(d_ctx.begin(), d_ctx.end());
          ls::AttentionArgs a;
          a.ld_q = ld_q;
          a.ld_k = a.ld_v = ld_kv;
          a.ld_ctx = hd;
          a.key_pad = pad.data();
          a.causal = causal;
          a.batch = s.batch;
          a.heads = s.heads;
          a.len_q = s.lq;
          a.len_k = s.lk;
          a.head_dim = s.head_dim;
          a.scale = 1.f / std::sqrt(float(s.head_dim));
          a.dropout = p;
          a.key = key_for(9);
          a.dt = DType::F64;
          a.q = qd.data();
          a.k = s.cross ? kvd.data() : qd.data() + hd;
          a.v = s.cross ? kvd.data() + hd : qd.data() + 2 * hd;
          std::vector<double> ctx_d(size_t(Tq * hd)), lse_d(size_t(s.batch * s.heads * s.lq)),
              delta_d(lse_d.size()), dq_d(qd.size()), dkv_d(s.cross ? kvd.size() : 0);
          a.ctx = ctx_d.data();
          a.lse = lse_d.data();
          cpu->attention_forward(a);
          double* dk_d = s.cross ? dkv_d.data() : dq_d.data() + hd;
          double* dv_d = s.cross ? dkv_d.data() + hd : dq_d.data() + 2 * hd;
          const auto db0 = randn(size_t(3 * hd), 0.5f);
          std::vector<double> db_d(db0.begin(), db0.end());
          cpu->attention_backward(a, gd.data(), dq_d.data(), dk_d, dv_d, delta_d.data(),
                                  db_d.data());

          // CUDA, outputs poisoned.
          DevBuf dq_in = upload(qbuf, dt), dkv_in = upload(kvbuf, dt), dpad = upload_raw(pad);
          DevBuf dctx = poisoned(size_t(Tq * hd), dt), dlse = poisoned(lse_d.size(), DType::F32);
          DevBuf dg = upload(d_ctx, dt), ddelta = poisoned(lse_d.size(), DType::F32);
          DevBuf ddq = poisoned(qbuf.size(), dt), ddkv = poisoned(kvbuf.size(), dt);
          const size_t e = ls::dtype_size(dt);
          auto at = [&](const DevBuf& b, int64_t elems) {
            return static_cast<void*>(b.as<uint8_t>() + elems * e);
          };
          ls::AttentionArgs g = a;
          g.dt = dt;
          g.q = dq_in.p;
          g.k = s.cross ? dkv_in.p : at(dq_in, hd);
          g.v = s.cross ? at(dkv_in, hd) : at(dq_in, 2 * hd);
          g.ctx = dctx.p;
          g.lse = dlse.p;
          g.key_pad = dpad.as<uint8_t>();
          cuda.attention_forward(g);
          void* gk = s.cross ? ddkv.p : at(ddq, hd);
          void* gv = s.cross ? at(ddkv, hd) : at(ddq, 2 * hd);
          cuda.attention_backward(g, dg.p, ddq.p, gk, gv, ddelta.p, nullptr);

          auto to_f = [](const double* v, size_t n) { return std::vector<float>(v, v + n); };
          // ctx is P V with P rounded to dt on the tensor cores, then the output rounded: two
          // roundings of dt, so 2 tol(dt). Gradients: dS (or P) rounded to dt before the
          // products, then the output: 2 tol(dt) as well.
          CHECK_CLOSE(download(dctx, dt, ctx_d.size()), to_f(ctx_d.data(), ctx_d.size()),
                      2 * tol(dt));
          // lse in fp32 from the same rounded inputs (-inf rows must match exactly).
          auto lse = download(dlse, DType::F32, lse_d.size());
          std::vector<float> lse_f, lse_ref;
          for (size_t i = 0; i < lse.size(); ++i) {
            CHECK((std::isinf(lse[i]) && lse[i] < 0) == std::isinf(lse_d[i]));
            if (!std::isinf(lse_d[i])) {
              lse_f.push_back(lse[i]);
              lse_ref.push_back(float(lse_d[i]));
            }
          }
          if (!lse_ref.empty()) CHECK_CLOSE(lse_f, lse_ref, 1e-5);
          // delta_i = d_ctx_i . ctx_i from the device's own ctx (rounded to dt): the products
          // of two 16-bit values are exact in fp32, so only the fp32 sum's roundings are left,
          // at most 2 head_dim 2^-24 sum_j |d_ctx_ij ctx_ij| per row. Checked per row against
          // that bound: a norm-relative tolerance against the fp64 reference cannot be
          // justified, as the few terms of a row (head_dim 8 here) can cancel.
          {
            const auto ctx_dev = download(dctx, dt, ctx_d.size());
            const auto delta = download(ddelta, DType::F32, delta_d.size());
            size_t over = 0;
            for (int64_t b = 0; b < s.batch; ++b)
              for (int64_t h = 0; h < s.heads; ++h)
                for (int64_t i = 0; i < s.lq; ++i) {
                  double want = 0, mag = 0;
                  for (int64_t j = 0; j < s.head_dim; ++j) {
                    const size_t e = size_t((b * s.lq + i) * hd + h * s.head_dim + j);
                    const double term = double(d_ctx[e]) * double(ctx_dev[e]);
                    want += term;
                    mag += std::fabs(term);
                  }
                  const double got = delta[size_t((b * s.heads + h) * s.lq + i)];
                  over += !(std::fabs(got - want) <= 2.0 * double(s.head_dim) * 0x1p-24 * mag);
                }
            CHECK(over == 0);
          }
          CHECK_CLOSE(download(ddq, dt, dq_d.size()), to_f(dq_d.data(), dq_d.size()), 2 * tol(dt));
          if (s.cross && !dkv_d.empty())
            CHECK_CLOSE(download(ddkv, dt, dkv_d.size()), to_f(dkv_d.data(), dkv_d.size()),
                        2 * tol(dt));
          // Determinism: a second backward gives the same bits.
          auto first = download(ddq, dt, dq_d.size());
          cuda.attention_backward(g, dg.p, ddq.p, gk, gv, ddelta.p, nullptr);
          CHECK(download(ddq, dt, dq_d.size()) == first);
          // The projections' bias gradient (+= column sums of dq | dk | dv), with atomics and
          // with the deterministic partials (then bitwise repeatable). The sums are of the
          // gradients above, so 2 tol(dt).
          for (bool det : {false, true}) {
            INFO("deterministic " << det);
            cuda.set_workspace(det ? workspace.p : nullptr, det ? workspace.bytes : 0);
            cuda.set_deterministic(det);
            DevBuf ddb = upload(db0, DType::F32);
            cuda.attention_backward(g, dg.p, ddq.p, gk, gv, ddelta.p, ddb.p);
            const auto db = download(ddb, DType::F32, db0.size());
            CHECK_CLOSE(db, to_f(db_d.data(), db_d.size()), 2 * tol(dt));
            if (det) {
              DevBuf again = upload(db0, DType::F32);
              cuda.attention_backward(g, dg.p, ddq.p, gk, gv, ddelta.p, again.p);
              CHECK(download(again, DType::F32, db0.size()) == db);
            }
          }
          cuda.set_deterministic(true);  // the backend's default
          cuda.set_workspace(nullptr, 0);
        }
  // Refusals: fp32 and head_dim beyond the fused kernels, misaligned strides.
  ls::AttentionArgs bad;
  bad.batch = bad.heads = 1;
  bad.len_q = bad.len_k = 4;
  bad.head_dim = 8;
  bad.ld_q = bad.ld_k = bad.ld_v = bad.ld_ctx = 8;
  DevBuf buf(4096);
  bad.q = bad.k = bad.v = buf.p;
  bad.ctx = buf.as<uint8_t>() + 1024;
  bad.lse = buf.as<uint8_t>() + 2048;
  bad.dt = DType::F32;
  CHECK(ls::test::status_of([&] { cuda.attention_forward(bad); }) == LS_ERR_UNSUPPORTED);
  bad.dt = DType::F16;
  CHECK(ls::test::status_of([&] { cuda.attention_forward(bad); }) == LS_OK);
  bad.ld_q = 12;
  CHECK(ls::test::status_of([&] { cuda.attention_forward(bad); }) == LS_ERR_INVALID_ARGUMENT);
  bad.ld_q = 8;
  bad.head_dim = 8;
  bad.heads = 1;
  bad.lse = nullptr;
  CHECK(ls::test::status_of([&] { cuda.attention_forward(bad); }) == LS_ERR_INVALID_ARGUMENT);
  cuda.synchronize();
}

TEST_CASE("cuda cross-entropy forward/backward match the CPU reference") {
  auto cpu = ls::make_cpu_ops();
  ls::CudaOps cuda(0, nullptr);
  struct Shape {
    int64_t rows, vocab;
  };
  // Vocabularies covering each forward path: register slots 1/2/4/8 with 16-byte loads
  // (V % 8 == 0), the element-by-element register path (V % 8 != 0, up to 4 slots), and the
  // online path beyond the register slice (fp32 beyond 16384, fp16/bf16 beyond 32768), with
  // and without 16-byte loads. Targets include the first and last logits of a row.
  DevBuf workspace(1u << 20);
  for (Shape s : {Shape{1, 7}, Shape{37, 1000}, Shape{7, 32768}, Shape{13, 4099}, Shape{9, 16384},
                  Shape{4, 20000}, Shape{6, 12345}, Shape{5, 40000}, Shape{3, 33001}}) {
    for (DType dt : working_types()) {
      CAPTURE(s.rows);
      CAPTURE(s.vocab);
      INFO("dtype " << dtype_str(dt));
      const size_t n = size_t(s.rows * s.vocab);
      auto logits = rounded(dt, randn(n, 4.f));
      std::uniform_int_distribution<int> td(0, int(s.vocab - 1));
      std::vector<int32_t> targets(size_t(s.rows));
      for (auto& t : targets) t = td(rng());
      if (s.rows > 2) targets[2] = 1;  // a padding target
      if (s.rows > 1) targets[0] = int32_t(s.vocab - 1);
      if (s.rows > 3) targets[3] = 0;
      const float eps = 0.1f;
      std::vector<float> lse_ref(size_t(s.rows)), sums_ref = {1.f, 2.f, 3.f};
      cpu->cross_entropy_forward(logits.data(), targets.data(), lse_ref.data(), sums_ref.data(),
                                 s.rows, s.vocab, 1, eps, DType::F32);
      DevBuf dl = upload(logits, dt), dt_ = upload_raw(targets);
      DevBuf dlse = poisoned(size_t(s.rows), DType::F32),
             dsums = upload(std::vector<float>{1.f, 2.f, 3.f}, DType::F32);
      cuda.cross_entropy_forward(dl.p, dt_.as<int32_t>(), dlse.p, dsums.p, s.rows, s.vocab, 1, eps,
                                 dt);
      // lse and the sums: fp32 reductions over V terms in a different order (V up to 40000:
      // ~sqrt(V) * 6e-8 = 1e-5 relative; exp via ex2.approx adds ~1e-6 per term), then summed
      // over rows: kSumTol.
      CHECK_CLOSE(download(dlse, DType::F32, size_t(s.rows)), lse_ref, kSumTol);
      CHECK_CLOSE(download(dsums, DType::F32, 3), sums_ref, kSumTol);
      std::vector<float> det_sums;  // the deterministic sums' bits, for the fused call below
      {  // deterministic: per-row values summed in row order by reduce.cu, bitwise repeatable
        cuda.set_workspace(workspace.p, workspace.bytes);
        cuda.set_deterministic(true);
        std::vector<std::vector<float>> runs;
        for (int rep = 0; rep < 2; ++rep) {
          DevBuf lse2 = poisoned(size_t(s.rows), DType::F32),
                 sums2 = upload(std::vector<float>{1.f, 2.f, 3.f}, DType::F32);
          cuda.cross_entropy_forward(dl.p, dt_.as<int32_t>(), lse2.p, sums2.p, s.rows, s.vocab, 1,
                                     eps, dt);
          CHECK_CLOSE(download(lse2, DType::F32, size_t(s.rows)), lse_ref, kSumTol);
          runs.push_back(download(sums2, DType::F32, 3));
          CHECK_CLOSE(runs.back(), sums_ref, kSumTol);
        }
        CHECK(runs[0] == runs[1]);
        det_sums = runs[0];
        cuda.set_workspace(nullptr, 0);
      }

      std::vector<float> scale = {1024.f};
      std::vector<float> d_ref(n);
      cpu->cross_entropy_backward(logits.data(), targets.data(), lse_ref.data(), scale.data(),
                                  d_ref.data(), s.rows, s.vocab, 1, eps, DType::F32);
      DevBuf dscale = upload(scale, DType::F32), dd = poisoned(n, dt);
      cuda.cross_entropy_backward(dl.p, dt_.as<int32_t>(), dlse.p, dscale.p, dd.p, s.rows, s.vocab,
                                  1, eps, dt);
      // softmax - q: the target entry cancels (p - (1 - eps)); in fp32 the lse difference of
      // ~1e-6 relative becomes an absolute error of ~1e-6 * |lse| on each probability: 1e-4.
      CHECK_CLOSE(download(dd, dt, n), d_ref, dt == DType::F32 ? 1e-4 : tol(dt));

      // Forward and backward fused (training's call): the same bits as the two kernels above,
      // out of place and in place (d_logits over the logits, as the model runs it), with
      // atomics and with the deterministic sums (then the sums' bits too).
      const auto lse_sep = download(dlse, DType::F32, size_t(s.rows));
      const auto d_sep = download(dd, dt, n);
      for (int mode = 0; mode < 3; ++mode) {
        const bool in_place = mode == 1, deterministic = mode == 2;
        INFO("fused, " << (in_place ? "in place" : "out of place")
                       << (deterministic ? ", deterministic" : ""));
        DevBuf fl = upload(logits, dt), flse = poisoned(size_t(s.rows), DType::F32),
               fsums = upload(std::vector<float>{1.f, 2.f, 3.f}, DType::F32), fd = poisoned(n, dt);
        if (deterministic) {
          cuda.set_workspace(workspace.p, workspace.bytes);
          cuda.set_deterministic(true);
        }
        cuda.cross_entropy_forward_backward(fl.p, dt_.as<int32_t>(), flse.p, fsums.p, dscale.p,
                                            in_place ? fl.p : fd.p, s.rows, s.vocab, 1, eps, dt);
        if (deterministic) {
          cuda.set_deterministic(false);
          cuda.set_workspace(nullptr, 0);
        }
        CHECK(download(flse, DType::F32, size_t(s.rows)) == lse_sep);
        CHECK(download(in_place ? fl : fd, dt, n) == d_sep);
        const auto fused_sums = download(fsums, DType::F32, 3);
        CHECK_CLOSE(fused_sums, sums_ref, kSumTol);
        if (deterministic) CHECK(fused_sums == det_sums);
      }
    }
  }
}

TEST_CASE("cuda sum_squares and fused Adam/AdamW match the CPU reference") {
  auto cpu = ls::make_cpu_ops();
  ls::CudaOps cuda(0, nullptr);
  for (size_t n : {size_t(1), size_t(37), size_t(1 << 20) + 3}) {
    CAPTURE(n);
    auto x = randn(n);
    DevBuf dxs = upload(x, DType::F32), dss = upload(std::vector<float>{0.5f}, DType::F32);
    cuda.sum_squares(dxs.p, n, dss.p, DType::F32);
    auto ss = download(dss, DType::F32, 1);
    // The reference is the sum in double: the CPU backend's sequential fp32 sum drifts by
    // ~n u / 2 (5e-4 relative at n = 1e6), more than the CUDA tree reduction (partials of a
    // few terms per thread, then block and atomic sums: ~1e-6).
    double exact = 0.5;
    for (float f : x) exact += double(f) * double(f);
    CHECK_CLOSE(ss, std::vector<float>{float(exact)}, 1e-5);
    if (n < 1000) {
      std::vector<float> ss_ref = {0.5f};
      cpu->sum_squares(x.data(), n, ss_ref.data(), DType::F32);
      CHECK_CLOSE(ss, ss_ref, 1e-5);
    }

    for (bool decoupled : {false, true})
      for (DType wt : working_types())
        for (int skip : {0, 1}) {
          CAPTURE(decoupled);
          CAPTURE(skip);
          INFO("work dtype " << dtype_str(wt));
          ls::Ops::AdamArgs h;
          h.weight_decay = 0.01f;
          h.decoupled = decoupled;
          ls::AdamStep st;  // the per-update values, read from device memory
          st.lr = 1e-2;
          st.mult = 1.0 / 64.0;
          st.bias1 = 1.0 - std::pow(0.9, 3);
          st.bias2 = 1.0 - std::pow(0.999, 3);
          st.skip = skip;
          auto p = randn(n), g = randn(n, 100.f), m = randn(n, 0.1f), v = uniform(n, 0.f, 0.1f);
          std::vector<float> p_ref = p, m_ref = m, v_ref = v, w_ref(n);
          cpu->adam_update(p_ref.data(), g.data(), m_ref.data(), v_ref.data(), w_ref.data(),
                           DType::F32, n, h, &st, DType::F32);
          DevBuf dp = upload(p, DType::F32), dg = upload(g, DType::F32), dm = upload(m, DType::F32),
                 dv = upload(v, DType::F32), dw = poisoned(n, wt),
                 dstep = upload_raw(std::vector<ls::AdamStep>{st});
          cuda.adam_update(dp.p, dg.p, dm.p, dv.p, dw.p, wt, n, h, dstep.as<ls::AdamStep>(),
                           DType::F32);
          // Elementwise fp32 arithmetic in the same order; only the compiler's contraction
          // (fma) differs: 1e-6 relative to the operands. p = p - update and
          // m = b1 m + (1 - b1) g may cancel (a single element can land near 0), so their error
          // is measured against the size of the terms, not of the result; v adds positive
          // terms.
          auto norm = [](const std::vector<float>& a) {
            double s2 = 0;
            for (float f : a) s2 += double(f) * f;
            return std::sqrt(s2);
          };
          auto err_vs = [&](const std::vector<float>& got, const std::vector<float>& want,
                            double scale) {
            std::vector<float> diff(got.size());
            for (size_t i = 0; i < got.size(); ++i) {
              REQUIRE(std::isfinite(got[i]));
              diff[i] = got[i] - want[i];
            }
            return norm(diff) / std::max({norm(want), scale, 1e-30});
          };
          CHECK(err_vs(download(dp, DType::F32, n), p_ref, norm(p)) <= 1e-6);
          CHECK(err_vs(download(dm, DType::F32, n), m_ref,
                       0.9 * norm(m) + 0.1 * st.mult * norm(g)) <= 1e-6);
          CHECK_CLOSE(download(dv, DType::F32, n), v_ref, 1e-6);
          auto w = download(dw, wt, n);
          if (skip) {
            // Nothing written: the working copy stays poisoned and params equal the inputs.
            CHECK(std::all_of(w.begin(), w.end(), [](float f) { return std::isnan(f); }));
            CHECK(download(dp, DType::F32, n) == p);
          } else {
            CHECK_CLOSE(w, rounded(wt, p_ref), tol(wt));
          }
        }
  }
}

namespace {

// A device copy of v whose data starts `off` elements into the allocation (off = 1: pointers
// that are not 16-byte aligned, so the kernels take their element-by-element paths).
struct OffsetBuf {
  DevBuf buf;
  void* p = nullptr;
};
OffsetBuf upload_at(const std::vector<float>& v, DType dt, size_t off) {
  std::vector<float> padded(off, 0.f);
  padded.insert(padded.end(), v.begin(), v.end());
  OffsetBuf b{upload(padded, dt), nullptr};
  b.p = static_cast<char*>(b.buf.p) + off * ls::dtype_size(dt);
  return b;
}
OffsetBuf poisoned_at(size_t n, DType dt, size_t off) {
  OffsetBuf b{poisoned(n + off, dt), nullptr};
  b.p = static_cast<char*>(b.buf.p) + off * ls::dtype_size(dt);
  return b;
}
std::vector<float> download_at(const void* p, DType dt, size_t n) {
  std::vector<uint8_t> bytes(n * ls::dtype_size(dt));
  cuda_ok(cudaDeviceSynchronize(), "download");
  if (!bytes.empty())
    cuda_ok(cudaMemcpy(bytes.data(), p, bytes.size(), cudaMemcpyDeviceToHost), "download");
  return decode(dt, bytes, n);
}

}  // namespace

TEST_CASE("cuda dropout fusions: column-sum row steps, unaligned pointers, deterministic sums") {
  // Paths the test above does not reach: rows beyond 4 * 8 * gridDim.y (the column-sum kernels'
  // 4-row steps, then their remainder rows), a partial 256-column tile, pointers one element off
  // 16-byte alignment (element-by-element accesses, the same masks), and the deterministic
  // column sums through reduce.cu (bitwise reproducible). Tolerances as above: one output
  // rounding (tol(dt)) and kSumTol for the fp32 column sums.
  auto cpu = ls::make_cpu_ops();
  ls::CudaOps cuda(0, nullptr);
  DevBuf workspace(32u << 20);
  struct Shape {
    int64_t rows, cols;
  };
  const float p = 0.25f;
  for (Shape s : {Shape{70001, 8}, Shape{16411, 64}, Shape{301, 1000}, Shape{97, 12}, Shape{5, 3}})
    for (size_t off : {size_t(0), size_t(1)})
      for (DType dt : working_types()) {
        CAPTURE(s.rows);
        CAPTURE(s.cols);
        CAPTURE(off);
        INFO("dtype " << dtype_str(dt));
        const size_t n = size_t(s.rows * s.cols), nc = size_t(s.cols);
        auto x = rounded(dt, randn(n)), res = rounded(dt, randn(n)), bias = rounded(dt, randn(nc));
        auto g = rounded(dt, randn(n));
        OffsetBuf dx = upload_at(x, dt, off), dres = upload_at(res, dt, off),
                  dbias = upload_at(bias, dt, off), dg = upload_at(g, dt, off);

        std::vector<float> ref(n);
        cpu->bias_dropout_residual_forward(x.data(), bias.data(), res.data(), ref.data(), s.rows,
                                           s.cols, p, key_for(7), DType::F32);
        OffsetBuf out = poisoned_at(n, dt, off);
        cuda.bias_dropout_residual_forward(dx.p, dbias.p, dres.p, out.p, s.rows, s.cols, p,
                                           key_for(7), dt);
        CHECK_CLOSE(download_at(out.p, dt, n), ref, tol(dt));

        for (Activation act : {Activation::ReLU, Activation::GELU}) {
          CAPTURE(int(act));
          cpu->act_dropout_forward(x.data(), ref.data(), s.rows, s.cols, act, p, key_for(8),
                                   DType::F32);
          OffsetBuf aout = poisoned_at(n, dt, off);
          cuda.act_dropout_forward(dx.p, aout.p, s.rows, s.cols, act, p, key_for(8), dt);
          auto got = download_at(aout.p, dt, n);
          CHECK_CLOSE(got, ref, tol(dt));
          CHECK(mask_mismatches(got, ref, dt) == 0);

          auto d0 = randn(nc);
          std::vector<float> dpre_ref(n), db_ref = d0;
          cpu->act_dropout_backward(g.data(), x.data(), dpre_ref.data(), db_ref.data(), s.rows,
                                    s.cols, act, p, key_for(8), DType::F32);
          for (bool det : {false, true}) {
            INFO("deterministic " << det);
            cuda.set_workspace(det ? workspace.p : nullptr, det ? workspace.bytes : 0);
            cuda.set_deterministic(det);
            OffsetBuf ddpre = poisoned_at(n, dt, off);
            DevBuf ddb = upload(d0, DType::F32);
            cuda.act_dropout_backward(dg.p, dx.p, ddpre.p, ddb.p, s.rows, s.cols, act, p,
                                      key_for(8), dt);
            auto gpre = download_at(ddpre.p, dt, n);
            CHECK_CLOSE(gpre, dpre_ref, tol(dt));
            CHECK(mask_mismatches(gpre, dpre_ref, dt) == 0);
            auto db = download(ddb, DType::F32, nc);
            CHECK_CLOSE(db, db_ref, kSumTol);
            if (det) {
              DevBuf ddb2 = upload(d0, DType::F32);
              cuda.act_dropout_backward(dg.p, dx.p, ddpre.p, ddb2.p, s.rows, s.cols, act, p,
                                        key_for(8), dt);
              CHECK(download(ddb2, DType::F32, nc) == db);
            }
          }
          cuda.set_workspace(nullptr, 0);
          cuda.set_deterministic(true);
        }

        for (bool det : {false, true}) {
          INFO("deterministic " << det);
          cuda.set_workspace(det ? workspace.p : nullptr, det ? workspace.bytes : 0);
          cuda.set_deterministic(det);
          auto d0 = randn(nc);
          std::vector<float> dx_ref(n), db_ref = d0;
          cpu->dropout_bias_backward(g.data(), dx_ref.data(), db_ref.data(), s.rows, s.cols, p,
                                     key_for(9), DType::F32);
          OffsetBuf ddx = poisoned_at(n, dt, off);
          DevBuf ddb = upload(d0, DType::F32);
          cuda.dropout_bias_backward(dg.p, ddx.p, ddb.p, s.rows, s.cols, p, key_for(9), dt);
          auto got = download_at(ddx.p, dt, n);
          CHECK_CLOSE(got, dx_ref, tol(dt));
          CHECK(zero_mismatches(got, rounded(dt, dx_ref)) == 0);
          CHECK_CLOSE(download(ddb, DType::F32, nc), db_ref, kSumTol);

          std::vector<float> bg_ref = d0;
          cpu->bias_grad(g.data(), bg_ref.data(), s.rows, s.cols, DType::F32);
          DevBuf dbg = upload(d0, DType::F32);
          cuda.bias_grad(dg.p, dbg.p, s.rows, s.cols, dt);
          auto bg = download(dbg, DType::F32, nc);
          CHECK_CLOSE(bg, bg_ref, kSumTol);
          if (det) {
            DevBuf dbg2 = upload(d0, DType::F32);
            cuda.bias_grad(dg.p, dbg2.p, s.rows, s.cols, dt);
            CHECK(download(dbg2, DType::F32, nc) == bg);
          }
        }
        cuda.set_workspace(nullptr, 0);
        cuda.set_deterministic(true);

        std::vector<float> dref(n);
        cpu->dropout_forward(x.data(), dref.data(), n, p, key_for(10), DType::F32);
        OffsetBuf dout = poisoned_at(n, dt, off);
        cuda.dropout_forward(dx.p, dout.p, n, p, key_for(10), dt);
        auto got = download_at(dout.p, dt, n);
        CHECK_CLOSE(got, dref, tol(dt));
        CHECK(zero_mismatches(got, rounded(dt, dref)) == 0);
      }
}

TEST_CASE("cuda zero_ranges zeroes exactly the CPU reference's ranges, nothing else") {
  ls::CudaOps cuda(0, nullptr);
  auto cpu = ls::make_cpu_ops();
  for (size_t eb : {size_t{4}, size_t{8}}) {
    INFO("element bytes " << eb);
    const size_t n = (size_t{1} << 20) + 37;  // elements
    // Sorted, disjoint ranges: empty, 1..7 elements at every 16-byte phase, adjacent pairs, one
    // range of ~600K elements (many blocks of its grid row), the buffer's last element.
    std::vector<uint64_t> r;
    uint64_t at = 1;
    for (uint64_t len = 0; len < 8; ++len)
      for (uint64_t phase = 0; phase < 4; ++phase) {
        r.push_back(at + phase);
        r.push_back(at + phase + len);
        at += 16;
      }
    r.insert(r.end(), {at, at + 3, at + 3, at + 9});  // adjacent
    at += 40;
    r.insert(r.end(), {at + 1, at + 1 + 600001});
    r.insert(r.end(), {n - 1, n});
    const int64_t count = static_cast<int64_t>(r.size() / 2);
    uint64_t longest = 0;
    for (int64_t i = 0; i < count; ++i) longest = std::max(longest, r[2 * i + 1] - r[2 * i]);
    std::vector<uint8_t> host(n * eb);
    for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<uint8_t>(0x80 | (i * 131 % 127));
    DevBuf dev = upload_raw(host), ranges = upload_raw(r);
    cuda.zero_ranges(dev.p, ranges.as<uint64_t>(), count, longest, eb);
    cpu->zero_ranges(host.data(), r.data(), count, longest, eb);
    std::vector<uint8_t> got(host.size());
    // CudaOps' stream is non-blocking: finish the kernel before the legacy-stream copy.
    cuda_ok(cudaDeviceSynchronize(), "synchronize");
    cuda_ok(cudaMemcpy(got.data(), dev.p, got.size(), cudaMemcpyDeviceToHost), "download");
    size_t zeros = 0, mismatches = 0;
    for (size_t i = 0; i < host.size(); ++i) {
      zeros += host[i] == 0;
      mismatches += got[i] != host[i];
    }
    CHECK(mismatches == 0);
    uint64_t want_zero = 0;
    for (int64_t i = 0; i < count; ++i) want_zero += (r[2 * i + 1] - r[2 * i]) * eb;
    CHECK(zeros == want_zero);  // the reference zeroed the ranges (the fill has no zero byte)
  }
  // Errors: element size, null pointers; a range longer than max_elements on the CPU.
  DevBuf d(64);
  std::vector<uint64_t> one = {0, 4};
  DevBuf dr = upload_raw(one);
  CHECK_THROWS_AS(cuda.zero_ranges(d.p, dr.as<uint64_t>(), 1, 4, 2), ls::Error);
  CHECK_THROWS_AS(cuda.zero_ranges(nullptr, dr.as<uint64_t>(), 1, 4, 4), ls::Error);
  CHECK_THROWS_AS(cuda.zero_ranges(d.p, nullptr, 1, 4, 4), ls::Error);
  std::vector<float> h(8, 1.f);
  CHECK_THROWS_AS(cpu->zero_ranges(h.data(), one.data(), 1, 3, 4), ls::Error);
  CHECK(h[0] == 1.f);
}
