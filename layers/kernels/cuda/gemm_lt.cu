// GEMM through cuBLASLt, with its fused epilogues where they match ops.h's semantics and our
// own small kernels where they do not.
// Row-major onto column-major: a row-major C[M, N] is the column-major C^T[N, M], and
// C^T = op(B)^T op(A)^T, so cuBLASLt gets (A' = B, B' = A, m' = N, n' = M) with the same
// transpose flags and leading dimensions; the bias over C's columns n is then cuBLASLt's
// per-row bias of C^T, and the bias gradient over C's rows is its "BGRAD" over D's columns.
// Types: A, B fp32 (compute 32F with TF32 allowed) or fp16/bf16 (compute 32F); C in the input
// type or fp32 (weight-gradient accumulation with beta = 1); scale type fp32.
// Epilogues (batch must be 1 for every epilogue other than None):
//   Bias       c_type == ab_type: CUBLASLT_EPILOGUE_BIAS; else GEMM + add_bias_rows kernel.
//   BiasAct    GELU with c_type == ab_type, ldc % 8 == 0 and a 16-byte aligned aux:
//              CUBLASLT_EPILOGUE_GELU_AUX_BIAS (aux holds the pre-activation, as ops.h asks).
//              ReLU always takes the fallback: cuBLASLt's RELU_AUX stores a bit mask, not the
//              pre-activation. Fallback: GEMM into aux, bias kernel, activation kernel aux -> C.
//   DActBGrad  GELU with the same conditions and a workspace that holds the N-element bias
//              gradient slice: CUBLASLT_EPILOGUE_DGELU_BGRAD writes (not adds) the bias gradient
//              into that slice in C's type, and a small kernel adds it into the fp32 bias_grad.
//              Else (ReLU: cuBLASLt's DRELU needs the bit mask) GEMM + one kernel computing
//              C *= act'(aux) and the column sums into bias_grad.
//   BGradA     GEMM + our own row/column-sum kernel over op(A) into bias_grad.
// If cuBLASLt's heuristic offers no algorithm for a fused epilogue, the plan falls back (once,
// at plan creation). Plans (descriptors, layouts and the heuristic's algorithm) are cached per
// shape/type/epilogue/alignment/workspace key in a map: creating a plan allocates host memory
// (map node, cuBLASLt descriptors) once per distinct key, so a training step with fixed shapes
// allocates only in its first iteration (outside the steady state).
// The algorithm is cublasLtMatmulAlgoGetHeuristic's first result, unless autotuning is on
// (set_autotune, ls_context_options.gemm_autotune): then the first call of a plan that
// overwrites its output (beta == 0) outside stream capture times each of the heuristic's up to
// kCandidates algorithms on that call's own operands (one warm-up and kTunedRuns timed runs
// each, the host waiting for the events) and keeps the fastest. Calls that accumulate into their
// output (beta != 0) never run candidates, which would add into it; their plan waits for a
// beta == 0 call or keeps the first result. The winner depends on timings, so two processes may
// pick different algorithms, whose results can differ in rounding.
#include <array>
#include <map>
#include <mutex>

#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

cudaDataType_t lt_type(DType t) {
  switch (t) {
    case DType::F32:
      return CUDA_R_32F;
    case DType::F16:
      return CUDA_R_16F;
    case DType::BF16:
      return CUDA_R_16BF;
    default:
      LS_FAIL(LS_ERR_UNSUPPORTED,
              "gemm: dtype " << dtype_name(t) << " is not supported by the CUDA backend");
  }
}

// Largest power of two (<= 16) dividing the address and the batch stride in bytes.
uint32_t alignment_of(const void* p, int64_t stride_elems, int64_t batch, size_t elem) {
  uint64_t a = reinterpret_cast<uintptr_t>(p);
  if (batch > 1) a |= uint64_t(stride_elems) * elem;
  a |= 16;
  return uint32_t(a & (~a + 1));
}

constexpr size_t kSliceAlign = 256;
size_t round_up(size_t x, size_t a) {
  return (x + a - 1) / a * a;
}

enum class Mode : uint8_t { Plain, LtBias, LtGeluAuxBias, LtDGeluBGrad };

using Key = std::array<int64_t, 24>;
constexpr int kCandidates = 8;
constexpr int kTunedRuns = 3;

}  // namespace

struct LtGemm::Impl {
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    std::array<cublasLtMatmulAlgo_t, kCandidates> candidates{};  // heuristic order
    int candidate_count = 0;
    bool tuned = false;  // autotuning done (or nothing to choose from)
    Mode mode = Mode::Plain;
    size_t workspace_offset = 0;  // where cuBLASLt's workspace starts (after a bgrad slice)
    size_t workspace_bytes = 0;
  };

  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_size = 0;
  bool fused = true;
  bool allow_tf32 = true;  // fp32 GEMMs on TF32 tensor cores
  bool autotune = false;
  size_t fused_count = 0;
  size_t tuned_count = 0;
  cudaEvent_t tune_events[2] = {nullptr, nullptr};
  std::map<Key, Plan> plans;
  mutable std::mutex mutex;

  ~Impl() {
    for (auto& kv : plans) destroy(kv.second);
    for (cudaEvent_t e : tune_events)
      if (e != nullptr) cudaEventDestroy(e);
    if (handle != nullptr) cublasLtDestroy(handle);
  }

  static void destroy(Plan& p) {
    if (p.op) cublasLtMatmulDescDestroy(p.op);
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c) cublasLtMatrixLayoutDestroy(p.c);
    p = Plan{};
  }

  // Builds descriptors for `mode`; returns false (and leaves nothing allocated) when cuBLASLt
  // offers no algorithm, so the caller can fall back to Mode::Plain.
  bool build(const GemmArgs& g, Mode mode, Plan& plan) {
    plan.mode = mode;
    cublasComputeType_t compute =
        g.ab_type == DType::F32 && allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    cudaDataType_t ab = lt_type(g.ab_type), ct = lt_type(g.c_type);
    try {
      LS_CUBLAS_CALL(cublasLtMatmulDescCreate(&plan.op, compute, CUDA_R_32F));
      cublasOperation_t ta = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
      cublasOperation_t tb = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
      LS_CUBLAS_CALL(
          cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
      LS_CUBLAS_CALL(
          cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
      cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
      if (mode == Mode::LtBias) epi = CUBLASLT_EPILOGUE_BIAS;
      if (mode == Mode::LtGeluAuxBias) epi = CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
      if (mode == Mode::LtDGeluBGrad) epi = CUBLASLT_EPILOGUE_DGELU_BGRAD;
      LS_CUBLAS_CALL(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                                    sizeof(epi)));
      if (mode == Mode::LtGeluAuxBias || mode == Mode::LtDGeluBGrad) {
        int64_t ld = g.ldc;
        LS_CUBLAS_CALL(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
                                                      &ld, sizeof(ld)));
      }
      // A' = B: column-major [N, K] (op N) or [K, N] (op T) with ld = ldb.
      LS_CUBLAS_CALL(cublasLtMatrixLayoutCreate(&plan.a, ab, g.trans_b ? g.k : g.n,
                                                g.trans_b ? g.n : g.k, g.ldb));
      LS_CUBLAS_CALL(cublasLtMatrixLayoutCreate(&plan.b, ab, g.trans_a ? g.m : g.k,
                                                g.trans_a ? g.k : g.m, g.lda));
      LS_CUBLAS_CALL(cublasLtMatrixLayoutCreate(&plan.c, ct, g.n, g.m, g.ldc));
      if (g.batch > 1) {
        int32_t count = int32_t(g.batch);
        const std::pair<cublasLtMatrixLayout_t, int64_t> layouts[] = {
            {plan.a, g.stride_b}, {plan.b, g.stride_a}, {plan.c, g.stride_c}};
        for (const auto& l : layouts) {
          LS_CUBLAS_CALL(cublasLtMatrixLayoutSetAttribute(
              l.first, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
          int64_t stride = l.second;
          LS_CUBLAS_CALL(cublasLtMatrixLayoutSetAttribute(
              l.first, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
        }
      }
      // Workspace: a bias-gradient slice first (DGELU_BGRAD), cuBLASLt's scratch after it.
      size_t slice = mode == Mode::LtDGeluBGrad
                         ? round_up(size_t(g.n) * dtype_size(g.c_type), kSliceAlign)
                         : 0;
      if (slice > workspace_size) {
        destroy(plan);
        return false;
      }
      plan.workspace_offset = slice;
      plan.workspace_bytes = workspace == nullptr ? 0 : workspace_size - slice;

      cublasLtMatmulPreference_t pref = nullptr;
      LS_CUBLAS_CALL(cublasLtMatmulPreferenceCreate(&pref));
      std::array<cublasLtMatmulHeuristicResult_t, kCandidates> results{};
      int found = 0;
      cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
      {
        size_t ws = plan.workspace_bytes;
        uint32_t al_a = alignment_of(g.b, g.stride_b, g.batch, dtype_size(g.ab_type));
        uint32_t al_b = alignment_of(g.a, g.stride_a, g.batch, dtype_size(g.ab_type));
        uint32_t al_c = alignment_of(g.c, g.stride_c, g.batch, dtype_size(g.c_type));
        cublasStatus_t s1 = cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
        cublasStatus_t s2 = cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a));
        cublasStatus_t s3 = cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b));
        cublasStatus_t s4 = cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof(al_c));
        cublasStatus_t s5 = cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof(al_c));
        for (cublasStatus_t x : {s1, s2, s3, s4, s5})
          if (x != CUBLAS_STATUS_SUCCESS) st = x;
        if (st == CUBLAS_STATUS_SUCCESS)
          st = cublasLtMatmulAlgoGetHeuristic(handle, plan.op, plan.a, plan.b, plan.c, plan.c, pref,
                                              autotune ? kCandidates : 1, results.data(), &found);
      }
      cublasLtMatmulPreferenceDestroy(pref);
      // A fused epilogue cuBLASLt rejects for these types/layouts (any status) falls back.
      if ((mode != Mode::Plain && st != CUBLAS_STATUS_SUCCESS) ||
          st == CUBLAS_STATUS_NOT_SUPPORTED || (st == CUBLAS_STATUS_SUCCESS && found == 0)) {
        destroy(plan);
        return false;
      }
      LS_CUBLAS_CALL(st);
      plan.candidate_count = found;
      for (int i = 0; i < found; ++i) plan.candidates[size_t(i)] = results[size_t(i)].algo;
      plan.algo = results[0].algo;
      plan.tuned = found < 2;
      return true;
    } catch (...) {
      destroy(plan);
      throw;
    }
  }

  Plan& plan_for(const GemmArgs& g) {
    Mode want = Mode::Plain;
    bool same = g.c_type == g.ab_type;
    bool aux_ok =
        g.aux != nullptr && g.ldc % 8 == 0 && reinterpret_cast<uintptr_t>(g.aux) % 16 == 0;
    if (fused && g.batch == 1) {
      if (g.epilogue == Epilogue::Bias && same) want = Mode::LtBias;
      if (g.epilogue == Epilogue::BiasAct && g.act == Activation::GELU && same && aux_ok)
        want = Mode::LtGeluAuxBias;
      if (g.epilogue == Epilogue::DActBGrad && g.act == Activation::GELU && same && aux_ok &&
          workspace != nullptr)
        want = Mode::LtDGeluBGrad;
    }
    Key key{int64_t(g.trans_a),
            int64_t(g.trans_b),
            g.m,
            g.n,
            g.k,
            g.lda,
            g.ldb,
            g.ldc,
            g.stride_a,
            g.stride_b,
            g.stride_c,
            g.batch,
            int64_t(g.ab_type),
            int64_t(g.c_type),
            int64_t(want),
            int64_t(alignment_of(g.a, g.stride_a, g.batch, dtype_size(g.ab_type))),
            int64_t(alignment_of(g.b, g.stride_b, g.batch, dtype_size(g.ab_type))),
            int64_t(alignment_of(g.c, g.stride_c, g.batch, dtype_size(g.c_type))),
            int64_t(reinterpret_cast<uintptr_t>(workspace) % 256),
            int64_t(workspace_size),
            0,
            0,
            0,
            0};
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
    Plan plan;
    if (!(want != Mode::Plain && build(g, want, plan))) {
      if (!build(g, Mode::Plain, plan))
        LS_FAIL(LS_ERR_CUBLAS, "gemm: cublasLtMatmulAlgoGetHeuristic found no algorithm for m="
                                   << g.m << " n=" << g.n << " k=" << g.k << " "
                                   << dtype_name(g.ab_type) << "->" << dtype_name(g.c_type));
    }
    return plans.emplace(key, plan).first->second;
  }

  void run(const GemmArgs& g, cudaStream_t s, const Reduction& red) {
    std::lock_guard<std::mutex> lock(mutex);
    run_locked(g, s, red);
  }

  static bool capturing(cudaStream_t s) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    LS_CUDA_CALL(cudaStreamIsCapturing(s, &status));
    return status != cudaStreamCaptureStatusNone;
  }

  // Times the plan's candidates on this call's operands (beta == 0: every run overwrites the
  // same output, which the real call then writes again) and keeps the fastest in plan.algo. A
  // candidate cuBLASLt refuses at run time is skipped.
  void tune(Plan& plan, const GemmArgs& g, void* c_out, void* lt_ws, cudaStream_t s) {
    for (cudaEvent_t& e : tune_events)
      if (e == nullptr) LS_CUDA_CALL(cudaEventCreate(&e));
    const float alpha = g.alpha, beta = 0.f;
    float best_ms = 0.f;
    int best = -1;
    for (int i = 0; i < plan.candidate_count; ++i) {
      const cublasLtMatmulAlgo_t* algo = &plan.candidates[size_t(i)];
      auto run_once = [&] {
        return cublasLtMatmul(handle, plan.op, &alpha, g.b, plan.a, g.a, plan.b, &beta, c_out,
                              plan.c, c_out, plan.c, algo, lt_ws, plan.workspace_bytes, s);
      };
      if (run_once() != CUBLAS_STATUS_SUCCESS) continue;  // warm-up; refused: skipped
      LS_CUDA_CALL(cudaEventRecord(tune_events[0], s));
      for (int r = 0; r < kTunedRuns; ++r) LS_CUBLAS_CALL(run_once());
      LS_CUDA_CALL(cudaEventRecord(tune_events[1], s));
      LS_CUDA_CALL(cudaEventSynchronize(tune_events[1]));
      float ms = 0.f;
      LS_CUDA_CALL(cudaEventElapsedTime(&ms, tune_events[0], tune_events[1]));
      if (best < 0 || ms < best_ms) {
        best = i;
        best_ms = ms;
      }
    }
    if (best >= 0) plan.algo = plan.candidates[size_t(best)];
    plan.tuned = true;
    ++tuned_count;
  }

  void run_locked(const GemmArgs& g, cudaStream_t s, const Reduction& red) {
    Plan& plan = plan_for(g);
    char* ws = static_cast<char*>(workspace);
    void* lt_ws = ws == nullptr ? nullptr : ws + plan.workspace_offset;
    // Per-call pointers of the epilogue.
    void* c_out = g.c;
    if (plan.mode == Mode::LtBias || plan.mode == Mode::LtGeluAuxBias) {
      const void* bias = g.bias;
      LS_CUBLAS_CALL(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                    &bias, sizeof(bias)));
    }
    if (plan.mode == Mode::LtGeluAuxBias || plan.mode == Mode::LtDGeluBGrad) {
      void* aux = g.aux;
      LS_CUBLAS_CALL(cublasLtMatmulDescSetAttribute(
          plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
    }
    if (plan.mode == Mode::LtDGeluBGrad) {
      void* slice = ws;
      LS_CUBLAS_CALL(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                    &slice, sizeof(slice)));
    }
    bool plain = plan.mode == Mode::Plain;
    // Plain fallback of BiasAct: the GEMM writes the pre-activation into aux.
    if (plain && g.epilogue == Epilogue::BiasAct) c_out = g.aux;
    float alpha = g.alpha, beta = g.beta;
    if (autotune && !plan.tuned && beta == 0.f && !capturing(s)) tune(plan, g, c_out, lt_ws, s);
    cublasStatus_t st =
        cublasLtMatmul(handle, plan.op, &alpha, g.b, plan.a, g.a, plan.b, &beta, c_out, plan.c,
                       c_out, plan.c, &plan.algo, lt_ws, plan.workspace_bytes, s);
    if (st == CUBLAS_STATUS_NOT_SUPPORTED && plan.mode != Mode::Plain) {
      // Rejected at run time: replace the cached plan by a plain one and run the fallback.
      Plan plainp;
      if (!build(g, Mode::Plain, plainp))
        LS_FAIL(LS_ERR_CUBLAS, "gemm: no plain algorithm after a rejected fused epilogue");
      destroy(plan);
      plan = plainp;
      run_locked(g, s, red);
      return;
    }
    LS_CUBLAS_CALL(st);
    if (!plain) ++fused_count;
    if (plan.mode == Mode::LtDGeluBGrad)
      launch_accumulate_f32(static_cast<float*>(g.bias_grad), ws, g.c_type, size_t(g.n), s);
    if (!plain) return;
    switch (g.epilogue) {
      case Epilogue::None:
        break;
      case Epilogue::Bias:
        launch_add_bias_rows(g.c, g.c_type, g.ldc, g.bias, g.ab_type, g.m, g.n, s);
        break;
      case Epilogue::BiasAct:
        launch_add_bias_rows(g.aux, g.c_type, g.ldc, g.bias, g.ab_type, g.m, g.n, s);
        launch_activation(g.aux, g.c, g.m, g.n, g.ldc, g.act, g.c_type, s);
        break;
      case Epilogue::DActBGrad:
        launch_act_dropout_backward(g.c, g.aux, g.c, static_cast<float*>(g.bias_grad), g.m, g.n,
                                    g.ldc, true, g.act, 0.f, DropoutKey{}, g.c_type, s, red);
        break;
      case Epilogue::BGradA:
        if (g.trans_a)  // A stored [K, M]: column sums
          launch_bias_grad(g.a, static_cast<float*>(g.bias_grad), g.k, g.m, g.lda, g.ab_type, s,
                           red);
        else  // A stored [M, K]: row sums
          launch_row_sums(g.a, static_cast<float*>(g.bias_grad), g.m, g.k, g.lda, g.ab_type, s);
        break;
    }
  }
};

LtGemm::LtGemm() : impl_(new Impl) {
  LS_CUBLAS_CALL(cublasLtCreate(&impl_->handle));
}
LtGemm::~LtGemm() = default;

void LtGemm::set_workspace(void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->workspace = bytes > 0 ? p : nullptr;
  impl_->workspace_size = p != nullptr ? bytes : 0;
}
void LtGemm::set_fused_epilogues(bool on) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->fused = on;
  for (auto& kv : impl_->plans) Impl::destroy(kv.second);
  impl_->plans.clear();
}
void LtGemm::set_allow_tf32(bool on) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->allow_tf32 = on;
  for (auto& kv : impl_->plans) Impl::destroy(kv.second);
  impl_->plans.clear();
}
void LtGemm::set_autotune(bool on) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->autotune = on;
  for (auto& kv : impl_->plans) Impl::destroy(kv.second);
  impl_->plans.clear();
}
size_t LtGemm::tuned_plans() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->tuned_count;
}
size_t LtGemm::plan_count() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->plans.size();
}
size_t LtGemm::fused_calls() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->fused_count;
}
void LtGemm::run(const GemmArgs& g, cudaStream_t s, const Reduction& red) {
  impl_->run(g, s, red);
}

}  // namespace cuda
}  // namespace ls
