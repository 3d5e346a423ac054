// CUDA GEMM (cuBLASLt) against the CPU reference GEMM in fp32, every epilogue, fused through
// cuBLASLt and through the fallback kernels, in fp32/fp16/bf16, with odd shapes and
// transposes. Outputs are NaN-poisoned before each run.
//
// Tolerances (relative norm error):
// - fp32 inputs run with TF32 allowed: operands are rounded to 10-bit mantissas (unit
//   roundoff 2^-11), products keep ~4.9e-4 relative error each, which averages to ~3e-4 RMS
//   in the result: 2e-3.
// - fp16: identical inputs, fp32 accumulation; C is rounded to fp16 (2^-11) and the fallback
//   DActBGrad rounds twice (C, then C * act'): 2e-3.
// - bf16: unit roundoff 2^-8, up to two roundings: 1.5e-2.
// - bias gradients (fp32 outputs): the fused path rounds cuBLASLt's bias gradient to C's
//   type before adding, so the same per-dtype bound applies (fp32: 2e-3 for TF32).
#include <tuple>

#include "cuda/cuda_test_util.h"
#include "layers/kernels/cuda/cuda_ops.h"
#include "runtime/error.h"

using namespace lstest;
using ls::Activation;
using ls::Epilogue;
using ls::GemmArgs;

namespace {

double gemm_tol(DType dt) {
  switch (dt) {
    case DType::F16:
      return 2e-3;
    case DType::BF16:
      return 1.5e-2;
    default:
      return 2e-3;
  }
}

struct Case {
  int64_t m, n, k;
  bool ta, tb;
  int64_t batch;
  Epilogue epi;
  Activation act;
  bool c_f32;  // C in fp32 with beta = 1 (weight-gradient accumulation)
};

void run_case(ls::CudaOps& cuda, ls::Ops& cpu, const Case& cs, DType dt) {
  CAPTURE(cs.m);
  CAPTURE(cs.n);
  CAPTURE(cs.k);
  CAPTURE(cs.ta);
  CAPTURE(cs.tb);
  CAPTURE(cs.batch);
  CAPTURE(int(cs.epi));
  CAPTURE(int(cs.act));
  CAPTURE(cs.c_f32);
  INFO("dtype " << dtype_str(dt));
  const int64_t m = cs.m, n = cs.n, k = cs.k, batch = cs.batch;
  // Row-major storage with a little padding in the leading dimensions (multiple of 8 kept for C
  // so the aux-ld condition of the fused path holds when n allows it).
  const int64_t lda = (cs.ta ? m : k) + 3, ldb = (cs.tb ? k : n) + 1;
  const int64_t ldc = n % 8 == 0 ? n : n + 2;
  const int64_t rows_a = cs.ta ? k : m, rows_b = cs.tb ? n : k;
  const int64_t sa = rows_a * lda, sb = rows_b * ldb, sc = m * ldc;
  const DType ct = cs.c_f32 ? DType::F32 : dt;

  auto a = rounded(dt, randn(size_t(sa * batch)));
  auto b = rounded(dt, randn(size_t(sb * batch)));
  auto bias = rounded(dt, randn(size_t(n)));
  auto c0 = rounded(ct, randn(size_t(sc * batch)));
  // DActBGrad reads aux (the forward pre-activation), given in C's type.
  auto aux_in = rounded(ct, randn(size_t(sc)));
  auto bgrad0 = randn(size_t(std::max(m, n)));
  const float beta = cs.c_f32 ? 1.f : 0.f;
  const float alpha = cs.epi == Epilogue::None ? 0.75f : 1.f;

  GemmArgs g;
  g.trans_a = cs.ta;
  g.trans_b = cs.tb;
  g.m = m;
  g.n = n;
  g.k = k;
  g.lda = lda;
  g.ldb = ldb;
  g.ldc = ldc;
  g.stride_a = sa;
  g.stride_b = sb;
  g.stride_c = sc;
  g.batch = batch;
  g.alpha = alpha;
  g.beta = beta;
  g.epilogue = cs.epi;
  g.act = cs.act;

  // CPU reference in fp32.
  std::vector<float> c_ref = c0, aux_ref = cs.epi == Epilogue::DActBGrad
                                               ? aux_in
                                               : std::vector<float>(size_t(sc), 0.f);
  std::vector<float> bg_ref = bgrad0;
  {
    GemmArgs h = g;
    h.ab_type = DType::F32;
    h.c_type = DType::F32;
    h.a = a.data();
    h.b = b.data();
    h.c = c_ref.data();
    h.bias = bias.data();
    h.aux = aux_ref.data();
    h.bias_grad = bg_ref.data();
    cpu.gemm(h);
  }

  DevBuf da = upload(a, dt), db = upload(b, dt), dbias = upload(bias, dt);
  DevBuf dc = beta != 0.f ? upload(c0, ct) : poisoned(size_t(sc * batch), ct);
  DevBuf daux = cs.epi == Epilogue::DActBGrad ? upload(aux_in, ct) : poisoned(size_t(sc), ct);
  DevBuf dbg = upload(bgrad0, DType::F32);
  g.ab_type = dt;
  g.c_type = ct;
  g.a = da.p;
  g.b = db.p;
  g.c = dc.p;
  g.bias = dbias.p;
  g.aux = daux.p;
  g.bias_grad = dbg.p;
  cuda.gemm(g);
  cuda.synchronize();

  // Compare only the stored matrix elements (not the padding between rows of C).
  auto strip = [&](const std::vector<float>& full, int64_t nb) {
    std::vector<float> out;
    for (int64_t bi = 0; bi < nb; ++bi)
      for (int64_t r = 0; r < m; ++r)
        for (int64_t c = 0; c < n; ++c) out.push_back(full[size_t(bi * sc + r * ldc + c)]);
    return out;
  };
  auto c_got = download(dc, ct, size_t(sc * batch));
  CHECK_CLOSE(strip(c_got, batch), strip(c_ref, batch), gemm_tol(dt));
  if (cs.epi == Epilogue::BiasAct) {
    auto aux_got = download(daux, ct, size_t(sc));
    CHECK_CLOSE(strip(aux_got, 1), strip(aux_ref, 1), gemm_tol(dt));
  }
  if (cs.epi == Epilogue::DActBGrad || cs.epi == Epilogue::BGradA) {
    auto bg_got = download(dbg, DType::F32, bgrad0.size());
    CHECK_CLOSE(bg_got, bg_ref, gemm_tol(dt));
  }
}

// A plain row-major C[m, n] = A[m, k] B[k, n] with packed rows.
GemmArgs packed_gemm(int64_t m, int64_t n, int64_t k, const void* a, const void* b, void* c,
                     DType ab, DType ct) {
  GemmArgs g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.lda = k;
  g.ldb = n;
  g.ldc = n;
  g.a = a;
  g.b = b;
  g.c = c;
  g.ab_type = ab;
  g.c_type = ct;
  return g;
}

std::vector<Case> cases() {
  std::vector<Case> v;
  const std::vector<std::tuple<int64_t, int64_t, int64_t>> shapes = {
      {1, 7, 37}, {37, 64, 513}, {7, 512, 64}, {513, 1024, 512}, {64, 37, 1024}};
  for (auto [m, n, k] : shapes)
    for (int t = 0; t < 4; ++t)
      v.push_back({m, n, k, bool(t & 1), bool(t & 2), 1, Epilogue::None, Activation::ReLU, false});
  // Batched strided (attention shapes) and fp32 accumulation of weight gradients.
  v.push_back({37, 37, 64, false, true, 7, Epilogue::None, Activation::ReLU, false});
  v.push_back({37, 64, 37, false, false, 12, Epilogue::None, Activation::ReLU, false});
  v.push_back({512, 1024, 513, true, false, 1, Epilogue::None, Activation::ReLU, true});
  v.push_back({64, 37, 7, true, false, 1, Epilogue::None, Activation::ReLU, true});
  for (auto [m, n, k] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {37, 512, 64}, {513, 1024, 256}, {7, 37, 64}}) {
    v.push_back({m, n, k, false, true, 1, Epilogue::Bias, Activation::ReLU, false});
    for (Activation act : {Activation::ReLU, Activation::GELU}) {
      v.push_back({m, n, k, false, true, 1, Epilogue::BiasAct, act, false});
      v.push_back({m, n, k, false, false, 1, Epilogue::DActBGrad, act, false});
    }
    v.push_back({k, n, m, true, false, 1, Epilogue::BGradA, Activation::ReLU, true});
    v.push_back({m, n, k, false, false, 1, Epilogue::BGradA, Activation::ReLU, false});
  }
  return v;
}

}  // namespace

TEST_CASE("cuda gemm matches the CPU reference (fused epilogues and fallbacks, all dtypes)") {
  auto cpu = ls::make_cpu_ops();
  ls::CudaOps cuda(0, nullptr);
  DevBuf workspace(32u << 20);
  for (bool with_ws : {true, false}) {
    cuda.set_workspace(with_ws ? workspace.p : nullptr, with_ws ? workspace.bytes : 0);
    for (bool fused : {true, false}) {
      cuda.set_fused_epilogues(fused);
      INFO("workspace " << with_ws << " fused " << fused);
      for (DType dt : working_types())
        for (const Case& cs : cases()) run_case(cuda, *cpu, cs, dt);
    }
  }
  MESSAGE("epilogues run fused in cuBLASLt: " << cuda.gemm_fused_calls() << " calls");
  CHECK(cuda.gemm_fused_calls() > 0);
}

TEST_CASE("cuda gemm autotuning: the chosen algorithms match the CPU reference") {
  // Every case runs its plan's candidates first (beta == 0) and must still give the reference
  // result; the accumulating cases (fp32 C, beta = 1) would be off if a candidate had run on
  // their output.
  auto cpu = ls::make_cpu_ops();
  ls::CudaOps cuda(0, nullptr);
  DevBuf workspace(32u << 20);
  cuda.set_workspace(workspace.p, workspace.bytes);
  cuda.set_gemm_autotune(true);
  for (DType dt : working_types())
    for (const Case& cs : cases()) run_case(cuda, *cpu, cs, dt);
  MESSAGE("plans autotuned: " << cuda.gemm_tuned_plans() << " of " << cuda.gemm_plan_count());
  CHECK(cuda.gemm_tuned_plans() > 0);
  CHECK(cuda.gemm_tuned_plans() <= cuda.gemm_plan_count());
}

TEST_CASE("cuda gemm autotuning waits for an overwriting call outside graph capture") {
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  {
    ls::CudaOps cuda(0, stream);
    cuda.set_gemm_autotune(true);
    const int64_t m = 256, n = 192, k = 128;
    DevBuf a = upload(randn(size_t(m * k)), DType::F16),
           b = upload(randn(size_t(k * n)), DType::F16);
    DevBuf c = upload(randn(size_t(m * n)), DType::F32);
    GemmArgs g = packed_gemm(m, n, k, a.p, b.p, c.p, DType::F16, DType::F32);
    // Accumulating into C: the plan is made, nothing is timed.
    g.beta = 1.f;
    cuda.gemm(g);
    cuda.synchronize();
    CHECK(cuda.gemm_plan_count() == 1);
    CHECK(cuda.gemm_tuned_plans() == 0);
    // Overwriting, but while the stream is being captured: still nothing timed.
    g.beta = 0.f;
    REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed) == cudaSuccess);
    cuda.gemm(g);
    cudaGraph_t graph = nullptr;
    REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
    CHECK(cudaGraphDestroy(graph) == cudaSuccess);
    CHECK(cuda.gemm_tuned_plans() == 0);
    // Overwriting, outside capture: the plan is tuned once.
    cuda.gemm(g);
    cuda.gemm(g);
    cuda.synchronize();
    CHECK(cuda.gemm_plan_count() == 1);
    CHECK(cuda.gemm_tuned_plans() == 1);
  }
  CHECK(cudaStreamDestroy(stream) == cudaSuccess);
}

TEST_CASE("cuda gemm caches one plan per shape") {
  ls::CudaOps cuda(0, nullptr);
  DevBuf a = upload(randn(64 * 32), DType::F16), b = upload(randn(32 * 48), DType::F16);
  DevBuf c = poisoned(64 * 48, DType::F16);
  GemmArgs g = packed_gemm(64, 48, 32, a.p, b.p, c.p, DType::F16, DType::F16);
  for (int i = 0; i < 3; ++i) cuda.gemm(g);
  CHECK(cuda.gemm_plan_count() == 1);
  g.m = 32;
  cuda.gemm(g);
  CHECK(cuda.gemm_plan_count() == 2);
  cuda.synchronize();
}

TEST_CASE("cuda gemm rejects bad arguments with ls::Error") {
  ls::CudaOps cuda(0, nullptr);
  GemmArgs g;
  g.m = g.n = g.k = 8;
  g.lda = g.ldb = g.ldc = 8;
  g.ab_type = DType::F64;
  g.c_type = DType::F64;
  int dummy = 0;
  g.a = g.b = &dummy;
  g.c = &dummy;
  try {
    cuda.gemm(g);
    FAIL("no error for fp64");
  } catch (const ls::Error& e) {
    CHECK(e.status() == LS_ERR_UNSUPPORTED);
  }
  g.ab_type = g.c_type = DType::F16;
  g.lda = 4;
  CHECK_THROWS_AS(cuda.gemm(g), ls::Error);
}
