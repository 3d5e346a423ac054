// How far cuBLASLt's first heuristic choice is from the fastest of the algorithms it offers, for
// the GEMMs of one encoder layer (tokens x d=1024, ffn=4096, fp16 inputs, fp32 accumulation) and
// of the decoder's cross-attention K/V projection (1024 -> 2048).
// The layouts are gemm_lt.cu's: row-major C[M, N] = op(A) op(B) handed to cuBLASLt as the
// column-major C^T = op(B)^T op(A)^T. Forward Y = X W^T (trans_b), data gradient dX = dY W,
// weight gradient dW += dY^T X (trans_a, fp32 output, beta = 1). The forward runs twice: plain
// and with cuBLASLt's bias epilogue (fp16 bias).
// Usage: bench_gemm_algos [tokens=8192] [candidates=16] [workspace MiB=32] [--energy-ms MS]
//                         [--energy-candidates N=4] [--only SUBSTRING]
// Prints, per GEMM, the heuristic's first algorithm and the fastest candidate (median of 20
// timed runs each after 5 warm-up runs) with their configurations. Nothing asserts timings.
//
// --energy-ms MS: then runs the heuristic's first and the fastest other candidates (up to N in
// all) back to back for MS milliseconds each, after MS / 2 of warm-up, and reads the GPU's
// energy counter (NVML, bench/cuda/nvml_energy.h) around the measured stretch: the sustained
// time per call, the average power, the SM clock at the end and the energy per call (GFLOP/J).
// A GPU at its power limit lowers its clock until the work's power fits, so there the
// candidate that takes the least energy per call is the fastest one. --only keeps the cases
// whose name contains SUBSTRING.
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <random>
#include <string>
#include <vector>

#include "bench/cuda/nvml_energy.h"
#include "runtime/cuda_check.h"

namespace {

// cuBLASLt failures as ls::Error, like runtime/cuda_check.h's LS_CUDA_CHECK for the runtime.
#define CHECK_LT(x)                                                                        \
  do {                                                                                     \
    cublasStatus_t s_ = (x);                                                               \
    if (s_ != CUBLAS_STATUS_SUCCESS) LS_FAIL(LS_ERR_CUBLAS, #x << ": status " << int(s_)); \
  } while (0)

struct Case {
  std::string name;
  bool trans_a, trans_b;
  long m, n, k, lda, ldb, ldc;
  bool c_f32;  // weight gradient: fp32 output, beta = 1
  bool bias;   // forward with the bias epilogue (fp16 bias [N])
};

void* device_random(size_t elems, bool f32, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  void* p = nullptr;
  if (f32) {
    std::vector<float> h(elems);
    for (auto& x : h) x = u(rng) * 0.01f;
    LS_CUDA_CHECK(cudaMalloc(&p, elems * 4));
    LS_CUDA_CHECK(cudaMemcpy(p, h.data(), elems * 4, cudaMemcpyHostToDevice));
  } else {
    std::vector<__half> h(elems);
    for (auto& x : h) x = __float2half(u(rng));
    LS_CUDA_CHECK(cudaMalloc(&p, elems * 2));
    LS_CUDA_CHECK(cudaMemcpy(p, h.data(), elems * 2, cudaMemcpyHostToDevice));
  }
  return p;
}

// An algorithm's configuration: "id/tile/stages/cluster/swizzle/custom/splitk".
std::string algo_config(const cublasLtMatmulAlgo_t& a) {
  const cublasLtMatmulAlgoConfigAttributes_t attrs[] = {CUBLASLT_ALGO_CONFIG_ID,
                                                        CUBLASLT_ALGO_CONFIG_TILE_ID,
                                                        CUBLASLT_ALGO_CONFIG_STAGES_ID,
                                                        CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID,
                                                        CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING,
                                                        CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION,
                                                        CUBLASLT_ALGO_CONFIG_SPLITK_NUM};
  std::string out;
  for (auto at : attrs) {
    uint32_t v = 0;  // uint32 (the id int32), the cluster shape uint16
    uint16_t v16 = 0;
    size_t written = 0;
    const bool narrow = at == CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID;
    if (cublasLtMatmulAlgoConfigGetAttribute(&a, at, narrow ? static_cast<void*>(&v16) : &v,
                                             narrow ? sizeof(v16) : sizeof(v),
                                             &written) != CUBLAS_STATUS_SUCCESS)
      v = 9999;
    else if (narrow)
      v = v16;
    out += (out.empty() ? "" : "/") + std::to_string(v);
  }
  return out;
}

}  // namespace

static int run(int argc, char** argv) {
  std::vector<std::string> positional;
  double energy_ms = 0;
  int energy_candidates = 4;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--energy-ms" && has_value)
      energy_ms = std::atof(argv[++i]);
    else if (a == "--energy-candidates" && has_value)
      energy_candidates = std::max(1, std::atoi(argv[++i]));
    else if (a == "--only" && has_value)
      only = argv[++i];
    else if (a.rfind("--", 0) == 0)
      LS_FAIL(LS_ERR_INVALID_ARGUMENT, "unknown or incomplete option " << a);
    else
      positional.push_back(a);
  }
  const long T = positional.size() > 0 ? std::atol(positional[0].c_str()) : 8192;
  const int want = positional.size() > 1 ? std::atoi(positional[1].c_str()) : 16;
  const size_t ws_bytes = size_t(positional.size() > 2 ? std::atol(positional[2].c_str()) : 32)
                          << 20;
  if (T <= 0 || want <= 0) LS_FAIL(LS_ERR_INVALID_ARGUMENT, "tokens and candidates must be > 0");
  ls::bench::NvmlEnergy nvml(0);
  if (energy_ms > 0 && !nvml.available())
    LS_FAIL(LS_ERR_UNSUPPORTED, "--energy-ms needs the GPU's energy counter: " << nvml.why());
  const long d = 1024, f = 4096;
  std::vector<Case> cases;
  struct Linear {
    const char* name;
    long in, out;
  };
  const Linear linears[] = {
      {"qkv", d, 3 * d}, {"attn_out", d, d}, {"fc1", d, f}, {"fc2", f, d}, {"kv", d, 2 * d}};
  for (const Linear& l : linears) {
    const std::string nm = l.name;
    cases.push_back({"fwd " + nm, false, true, T, l.out, l.in, l.in, l.in, l.out, false, false});
    cases.push_back(
        {"fwd+bias " + nm, false, true, T, l.out, l.in, l.in, l.in, l.out, false, true});
    cases.push_back({"dgrad " + nm, false, false, T, l.in, l.out, l.out, l.in, l.in, false, false});
    cases.push_back({"wgrad " + nm, true, false, l.out, l.in, T, l.out, l.in, l.in, true, false});
  }
  cudaDeviceProp prop{};
  LS_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("bench_gemm_algos on %s, cuBLASLt %zu, tokens %ld, up to %d candidates, "
              "workspace %zu MiB\n",
              prop.name, cublasLtGetVersion(), T, want, ws_bytes >> 20);
  std::printf("%-16s %6s %6s %6s %10s %10s %10s %6s %5s\n", "gemm", "m", "n", "k", "first us",
              "best us", "best TF/s", "gain", "algos");
  cublasLtHandle_t lt;
  CHECK_LT(cublasLtCreate(&lt));
  void* ws = nullptr;
  LS_CUDA_CHECK(cudaMalloc(&ws, ws_bytes));
  cudaStream_t s;
  LS_CUDA_CHECK(cudaStreamCreate(&s));
  cudaEvent_t e0, e1;
  LS_CUDA_CHECK(cudaEventCreate(&e0));
  LS_CUDA_CHECK(cudaEventCreate(&e1));
  std::mt19937 rng(1);
  double first_total = 0, best_total = 0;
  double first_joules = 0, least_joules = 0;  // summed over the cases, per call
  for (const Case& c : cases) {
    if (!only.empty() && c.name.find(only) == std::string::npos) continue;
    // Row-major operands: A is [M, K] (or [K, M] when trans_a), B is [K, N] (or [N, K]).
    const size_t a_elems = size_t(c.m) * c.k, b_elems = size_t(c.k) * c.n;
    const size_t c_elems = size_t(c.m) * c.n;
    void* A = device_random(a_elems, false, rng);
    void* B = device_random(b_elems, false, rng);
    void* C = device_random(c_elems, c.c_f32, rng);
    const cudaDataType_t ct = c.c_f32 ? CUDA_R_32F : CUDA_R_16F;
    cublasLtMatmulDesc_t op;
    CHECK_LT(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    // cuBLASLt's A' = B (op = trans_b), B' = A (op = trans_a), m' = N, n' = M.
    cublasOperation_t ta = c.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t tb = c.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    CHECK_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    CHECK_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    void* bias = nullptr;
    if (c.bias) {
      bias = device_random(size_t(c.n), false, rng);
      const cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
      const cudaDataType_t bt = CUDA_R_16F;
      CHECK_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof(ep)));
      CHECK_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                              sizeof(bias)));
      CHECK_LT(
          cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
    }
    cublasLtMatrixLayout_t la, lb, lc;
    // Column-major shapes: A' is N x K (stored K x N when transposed), B' is K x M (M x K).
    CHECK_LT(cublasLtMatrixLayoutCreate(&la, CUDA_R_16F, c.trans_b ? c.k : c.n,
                                        c.trans_b ? c.n : c.k, c.ldb));
    CHECK_LT(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16F, c.trans_a ? c.m : c.k,
                                        c.trans_a ? c.k : c.m, c.lda));
    CHECK_LT(cublasLtMatrixLayoutCreate(&lc, ct, c.n, c.m, c.ldc));
    cublasLtMatmulPreference_t pref;
    CHECK_LT(cublasLtMatmulPreferenceCreate(&pref));
    CHECK_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &ws_bytes, sizeof(ws_bytes)));
    std::vector<cublasLtMatmulHeuristicResult_t> res(static_cast<size_t>(want));
    int found = 0;
    CHECK_LT(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, want, res.data(),
                                            &found));
    const float alpha = 1.f, beta = c.c_f32 ? 1.f : 0.f;
    // One call with candidate i.
    auto matmul = [&](int i) {
      return cublasLtMatmul(lt, op, &alpha, B, la, A, lb, &beta, C, lc, C, lc, &res[size_t(i)].algo,
                            ws, ws_bytes, s);
    };
    std::vector<double> times;
    for (int i = 0; i < found; ++i) {
      auto run = [&] { return matmul(i); };
      if (run() != CUBLAS_STATUS_SUCCESS) {
        times.push_back(1e30);
        continue;
      }
      for (int w = 0; w < 4; ++w) CHECK_LT(run());
      std::vector<float> t(20);
      for (auto& x : t) {
        LS_CUDA_CHECK(cudaEventRecord(e0, s));
        CHECK_LT(run());
        LS_CUDA_CHECK(cudaEventRecord(e1, s));
        LS_CUDA_CHECK(cudaEventSynchronize(e1));
        LS_CUDA_CHECK(cudaEventElapsedTime(&x, e0, e1));
      }
      std::nth_element(t.begin(), t.begin() + 10, t.end());
      times.push_back(double(t[10]) * 1e3);
    }
    if (found > 0) {
      const auto best = std::min_element(times.begin(), times.end());
      const double flop = 2.0 * double(c.m) * double(c.n) * double(c.k);
      std::printf("%-16s %6ld %6ld %6ld %10.1f %10.1f %10.1f %5.1f%% %2d (#%ld) first %.1f TF/s\n",
                  c.name.c_str(), c.m, c.n, c.k, times[0], *best, flop / (*best * 1e-6) / 1e12,
                  (times[0] / *best - 1) * 100, found, long(best - times.begin()),
                  flop / (times[0] * 1e-6) / 1e12);
      std::printf("  first %s, fastest %s (id/tile/stages/cluster/swizzle/custom/splitk)\n",
                  algo_config(res[0].algo).c_str(),
                  algo_config(res[size_t(best - times.begin())].algo).c_str());
      first_total += times[0];
      best_total += *best;
      if (energy_ms > 0) {
        // The first candidate, then the others from the fastest in isolation.
        std::vector<int> order(static_cast<size_t>(found));
        for (int i = 0; i < found; ++i) order[size_t(i)] = i;
        std::sort(order.begin() + 1, order.end(),
                  [&](int x, int y) { return times[size_t(x)] < times[size_t(y)]; });
        double first_j = 0, least_j = 1e30;
        for (int r = 0; r < std::min(found, energy_candidates); ++r) {
          const int i = order[size_t(r)];
          if (times[size_t(i)] >= 1e29) continue;
          auto call = [&] { CHECK_LT(matmul(i)); };
          const long calls = std::max(10L, long(energy_ms * 1e3 / times[size_t(i)]));
          for (long w = 0; w < calls / 2; ++w) call();
          LS_CUDA_CHECK(cudaStreamSynchronize(s));
          const double j0 = nvml.joules();
          LS_CUDA_CHECK(cudaEventRecord(e0, s));
          for (long w = 0; w < calls; ++w) call();
          LS_CUDA_CHECK(cudaEventRecord(e1, s));
          LS_CUDA_CHECK(cudaEventSynchronize(e1));
          const double j = nvml.joules() - j0;
          const int mhz = nvml.sm_clock_mhz();
          float ms = 0;
          LS_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
          const double per_call_j = j / double(calls);
          if (r == 0) first_j = per_call_j;
          least_j = std::min(least_j, per_call_j);
          std::printf(
              "  energy %-26s isolated %7.1f us, sustained %7.1f us (%5.1f TF/s), %4.0f W, "
              "%4d MHz, %7.1f mJ/call, %6.1f GFLOP/J\n",
              (algo_config(res[size_t(i)].algo) + (r == 0 ? " (first)" : "")).c_str(),
              times[size_t(i)], 1e3 * ms / double(calls), flop * double(calls) / (ms * 1e-3) / 1e12,
              j / (ms * 1e-3), mhz, per_call_j * 1e3, flop / per_call_j / 1e9);
        }
        first_joules += first_j;
        least_joules += least_j;
      }
    } else {
      std::printf("%-16s no algorithm\n", c.name.c_str());
    }
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(op);
    LS_CUDA_CHECK(cudaFree(A));
    LS_CUDA_CHECK(cudaFree(B));
    LS_CUDA_CHECK(cudaFree(C));
    if (bias != nullptr) LS_CUDA_CHECK(cudaFree(bias));
  }
  std::printf("all cases: first %.1f us, best %.1f us (%.1f%% faster)\n", first_total, best_total,
              (first_total / best_total - 1) * 100);
  if (energy_ms > 0 && least_joules > 0)
    std::printf("all cases, energy per call: first %.1f mJ, least %.1f mJ (%.1f%% less)\n",
                first_joules * 1e3, least_joules * 1e3, (1 - least_joules / first_joules) * 100);
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gemm_algos: %s\n", e.what());
    return 1;
  }
}
