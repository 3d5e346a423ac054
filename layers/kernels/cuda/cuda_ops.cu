// CudaOps: the CUDA backend of Ops. Checks arguments (throwing ls::Error naming the call),
// then forwards to the launchers of the per-concept kernel files on its stream. Owns the
// cuBLASLt handle (through LtGemm), when not given one its stream, and two 32-bit counters in
// device memory for the in-kernel fixed-order sums (allocated once, at construction); all other
// scratch comes from set_workspace. Memory calls are asynchronous on the stream;
// synchronize() waits for it.
// Dropout masks are regenerated with Philox in every backward kernel (no mask memory).
// Embedding backward is deterministic only when asked (see embedding.cu). Column sums (bias
// and LayerNorm parameter gradients), cross-entropy sums and sum_squares add into their fp32
// outputs with atomics unless set_deterministic(true) and a workspace are given: then every
// block writes partials that are added in a fixed order, by the producing kernel's last blocks
// (partial_sums.cuh: the LayerNorm backward) or by reduce.cu (the others). Argument checks
// shared with the CPU backend come from ops.h.
#include "layers/kernels/backends.h"
#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"
#include "layers/kernels/cuda/cuda_ops.h"

namespace ls {
namespace {

cudaStream_t as_stream(void* s) {
  return static_cast<cudaStream_t>(s);
}

// The kernels do not bound-check positions: every row's last position (padding_idx + len at
// most) must lie inside the learned table.
void check_learned_positions(const EmbeddingArgs& a, const char* call) {
  LS_CHECK_ARG(int64_t(a.padding_idx) + a.len < a.max_positions,
               call << ": positions up to " << int64_t(a.padding_idx) + a.len
                    << " exceed the learned table of " << a.max_positions << " rows");
}
void check_working(DType dt, const char* call) {
  LS_REQUIRE(dt == DType::F32 || dt == DType::F16 || dt == DType::BF16, LS_ERR_UNSUPPORTED,
             call << ": dtype " << dtype_name(dt) << " is not supported by the CUDA backend");
}

}  // namespace

CudaOps::CudaOps(int device, void* stream) : device_(device) {
  if (stream == nullptr) {
    cudaStream_t s = nullptr;
    LS_CUDA_CALL(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    stream_ = s;
    owns_stream_ = true;
  } else {
    stream_ = stream;
  }
  try {
    cudaEvent_t e = nullptr;
    LS_CUDA_CALL(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    mark_ = e;
    // The counters of the in-kernel fixed-order sums (partial_sums.cuh): zero between kernels.
    LS_CUDA_CALL(cudaMalloc(&sync_, 2 * sizeof(unsigned)));
    LS_CUDA_CALL(cudaMemsetAsync(sync_, 0, 2 * sizeof(unsigned), as_stream(stream_)));
    gemm_.reset(new cuda::LtGemm());
  } catch (...) {
    if (sync_ != nullptr) cudaFree(sync_);
    if (mark_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(mark_));
    if (owns_stream_) cudaStreamDestroy(as_stream(stream_));
    throw;
  }
}

CudaOps::~CudaOps() {
  gemm_.reset();
  if (sync_ != nullptr) {
    cudaStreamSynchronize(as_stream(stream_));  // no kernel may still be using the counters
    cudaFree(sync_);
  }
  if (mark_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(mark_));
  if (owns_stream_) cudaStreamDestroy(as_stream(stream_));  // no throw from a destructor
}

// Fixed-order reductions through the workspace when deterministic and a workspace is set.
cuda::Reduction CudaOps::reduction() const {
  cuda::Reduction r;
  if (deterministic_ && workspace_ != nullptr) {
    r.scratch = static_cast<float*>(workspace_);
    r.capacity = workspace_bytes_ / sizeof(float);
    r.sync = sync_;
  }
  return r;
}

void CudaOps::set_workspace(void* p, size_t bytes) {
  gemm_->set_workspace(p, bytes);
  workspace_ = bytes > 0 ? p : nullptr;
  workspace_bytes_ = p != nullptr ? bytes : 0;
}
void CudaOps::set_fused_epilogues(bool on) {
  gemm_->set_fused_epilogues(on);
}
void CudaOps::set_allow_tf32(bool on) {
  gemm_->set_allow_tf32(on);
}
void CudaOps::set_gemm_autotune(bool on) {
  gemm_->set_autotune(on);
}
size_t CudaOps::gemm_tuned_plans() const {
  return gemm_->tuned_plans();
}
size_t CudaOps::gemm_plan_count() const {
  return gemm_->plan_count();
}
size_t CudaOps::gemm_fused_calls() const {
  return gemm_->fused_calls();
}

// ---------------------------------------------------------------- memory
void CudaOps::zero(void* p, size_t bytes) {
  if (bytes == 0) return;
  check_ptr(p, "zero", "p");
  LS_CUDA_CALL(cudaMemsetAsync(p, 0, bytes, as_stream(stream_)));
}
void CudaOps::zero_ranges(void* base, const uint64_t* ranges, int64_t count, uint64_t max_elements,
                          size_t elem_bytes) {
  if (count == 0) return;
  check_ptr(base, "zero_ranges", "base");
  check_ptr(ranges, "zero_ranges", "ranges");
  LS_CHECK_ARG(elem_bytes == 4 || elem_bytes == 8,
               "zero_ranges: elem_bytes must be 4 or 8, got " << elem_bytes);
  cuda::launch_zero_ranges(base, ranges, count, max_elements, elem_bytes, as_stream(stream_));
}
void CudaOps::copy(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  check_ptr(dst, "copy", "dst");
  check_ptr(src, "copy", "src");
  LS_CUDA_CALL(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, as_stream(stream_)));
}
void CudaOps::to_host(void* host_dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  check_ptr(host_dst, "to_host", "host_dst");
  check_ptr(src, "to_host", "src");
  LS_CUDA_CALL(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, as_stream(stream_)));
}
void CudaOps::from_host(void* dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return;
  check_ptr(dst, "from_host", "dst");
  check_ptr(host_src, "from_host", "host_src");
  LS_CUDA_CALL(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, as_stream(stream_)));
}
void CudaOps::synchronize() {
  LS_CUDA_CALL(cudaStreamSynchronize(as_stream(stream_)));
}

void CudaOps::cast(const void* src, DType src_t, void* dst, DType dst_t, size_t n) {
  if (n == 0) return;
  check_ptr(src, "cast", "src");
  check_ptr(dst, "cast", "dst");
  check_working(src_t, "cast");
  check_working(dst_t, "cast");
  cuda::launch_cast(src, src_t, dst, dst_t, n, as_stream(stream_));
}
void CudaOps::add_inplace(void* y, const void* x, DType t, size_t n) {
  if (n == 0) return;
  check_ptr(y, "add_inplace", "y");
  check_ptr(x, "add_inplace", "x");
  check_working(t, "add_inplace");
  cuda::launch_add_inplace(y, x, t, n, as_stream(stream_));
}

// ---------------------------------------------------------------- GEMM
void CudaOps::gemm(const GemmArgs& g) {
  const char* call = "gemm";
  check_working(g.ab_type, call);
  LS_REQUIRE(g.c_type == g.ab_type || g.c_type == accum_dtype(g.ab_type), LS_ERR_UNSUPPORTED,
             call << ": c_type " << dtype_name(g.c_type) << " with ab_type "
                  << dtype_name(g.ab_type) << " (must be the same or fp32)");
  check_nonneg(g.m, call, "m");
  check_nonneg(g.n, call, "n");
  check_nonneg(g.k, call, "k");
  LS_CHECK_ARG(g.batch >= 1, call << ": batch = " << g.batch << " must be >= 1");
  if (g.m == 0 || g.n == 0) return;
  LS_CHECK_ARG(g.k > 0, call << ": k = 0 is not supported");
  check_ptr(g.a, call, "a");
  check_ptr(g.b, call, "b");
  check_ptr(g.c, call, "c");
  LS_CHECK_ARG(g.lda >= (g.trans_a ? g.m : g.k), call << ": lda = " << g.lda << " too small");
  LS_CHECK_ARG(g.ldb >= (g.trans_b ? g.k : g.n), call << ": ldb = " << g.ldb << " too small");
  LS_CHECK_ARG(g.ldc >= g.n, call << ": ldc = " << g.ldc << " too small");
  if (g.epilogue != Epilogue::None) {
    LS_CHECK_ARG(g.batch == 1,
                 call << ": epilogues need batch == 1 on the CUDA backend, got " << g.batch);
  }
  if (g.epilogue == Epilogue::Bias || g.epilogue == Epilogue::BiasAct ||
      g.epilogue == Epilogue::DActBGrad)
    LS_CHECK_ARG(g.beta == 0.f, call << ": beta must be 0 with this epilogue");
  if (g.epilogue == Epilogue::Bias || g.epilogue == Epilogue::BiasAct)
    check_ptr(g.bias, call, "bias");
  if (g.epilogue == Epilogue::BiasAct || g.epilogue == Epilogue::DActBGrad) {
    check_activation(g.act, call);
    check_ptr(g.aux, call, "aux");
  }
  if (g.epilogue == Epilogue::DActBGrad || g.epilogue == Epilogue::BGradA)
    check_ptr(g.bias_grad, call, "bias_grad");
  gemm_->run(g, as_stream(stream_), reduction());
}

// ---------------------------------------------------------------- embedding
void CudaOps::embedding_forward(const EmbeddingArgs& a, const void* table, void* out) {
  const char* call = "embedding_forward";
  check_working(a.dt, call);
  check_embedding_args(a, call);
  if (a.batch * a.len == 0) return;
  check_ptr(table, call, "table");
  check_ptr(out, call, "out");
  if (a.learned_positions != nullptr) check_learned_positions(a, call);
  cuda::launch_embedding_forward(a, table, out, static_cast<float*>(workspace_), workspace_bytes_,
                                 as_stream(stream_));
}

void CudaOps::embedding_backward(const EmbeddingArgs& a, const void* d_out, void* d_table,
                                 void* d_positions, bool deterministic) {
  const char* call = "embedding_backward";
  check_working(a.dt, call);
  check_embedding_args(a, call);
  if (a.batch * a.len == 0) return;
  check_ptr(d_out, call, "d_out");
  if (d_positions != nullptr) check_learned_positions(a, call);
  cuda::launch_embedding_backward(a, d_out, static_cast<float*>(d_table),
                                  static_cast<float*>(d_positions), deterministic,
                                  as_stream(stream_));
}

// ---------------------------------------------------------------- LayerNorm
void CudaOps::layernorm_forward(const void* x, const void* gamma, const void* beta, void* y,
                                void* mean, void* rstd, int64_t rows, int64_t cols, float eps,
                                DType dt) {
  const char* call = "layernorm_forward";
  check_working(dt, call);
  if (!check_layernorm_args(x, gamma, beta, y, mean, rstd, rows, cols, eps, call)) return;
  cuda::launch_layernorm_forward(x, gamma, beta, y, static_cast<float*>(mean),
                                 static_cast<float*>(rstd), rows, cols, eps, dt,
                                 as_stream(stream_));
}

void CudaOps::layernorm_backward(const void* dy, const void* x, const void* gamma, const void* mean,
                                 const void* rstd, const void* d_residual, void* dx, void* d_gamma,
                                 void* d_beta, int64_t rows, int64_t cols, DType dt) {
  cuda::LnXhatSource src;
  src.xy = x;
  src.mean = static_cast<const float*>(mean);
  layernorm_backward_common("layernorm_backward", dy, src, gamma, rstd, d_residual, dx, d_gamma,
                            d_beta, rows, cols, dt);
}

void CudaOps::layernorm_backward_with_output(const void* dy, const void* x, const void* gamma,
                                             const void* beta, const void* mean, const void* rstd,
                                             const void* d_residual, void* dx, void* y,
                                             void* d_gamma, void* d_beta, int64_t rows,
                                             int64_t cols, DType dt) {
  const char* call = "layernorm_backward_with_output";
  if (rows > 0) {
    check_ptr(beta, call, "beta");
    check_ptr(y, call, "y");
  }
  cuda::LnXhatSource src;
  src.xy = x;
  src.mean = static_cast<const float*>(mean);
  src.beta = beta;
  src.y = y;
  layernorm_backward_common(call, dy, src, gamma, rstd, d_residual, dx, d_gamma, d_beta, rows, cols,
                            dt);
}

void CudaOps::layernorm_backward_from_output(const void* dy, const void* y, const void* gamma,
                                             const void* beta, const void* rstd,
                                             const void* d_residual, void* dx, void* d_gamma,
                                             void* d_beta, int64_t rows, int64_t cols, DType dt) {
  cuda::LnXhatSource src;
  src.xy = y;
  src.beta = beta;
  src.from_output = true;
  layernorm_backward_common("layernorm_backward_from_output", dy, src, gamma, rstd, d_residual, dx,
                            d_gamma, d_beta, rows, cols, dt);
}

void CudaOps::layernorm_backward_common(const char* call, const void* dy,
                                        const cuda::LnXhatSource& src, const void* gamma,
                                        const void* rstd, const void* d_residual, void* dx,
                                        void* d_gamma, void* d_beta, int64_t rows, int64_t cols,
                                        DType dt) {
  check_working(dt, call);
  check_nonneg(rows, call, "rows");
  LS_CHECK_ARG(cols > 0, call << ": cols = " << cols << " must be positive");
  if (rows == 0) return;
  const bool out = src.from_output;
  for (auto pr : {std::make_pair(dy, "dy"), std::make_pair(src.xy, out ? "y" : "x"),
                  std::make_pair(gamma, "gamma"),
                  out ? std::make_pair(src.beta, "beta")
                      : std::make_pair(static_cast<const void*>(src.mean), "mean"),
                  std::make_pair(rstd, "rstd"), std::make_pair(static_cast<const void*>(dx), "dx"),
                  std::make_pair(static_cast<const void*>(d_gamma), "d_gamma"),
                  std::make_pair(static_cast<const void*>(d_beta), "d_beta")})
    check_ptr(pr.first, call, pr.second);
  const float* rs = static_cast<const float*>(rstd);
  float* dg = static_cast<float*>(d_gamma);
  float* db = static_cast<float*>(d_beta);
  cuda::Reduction red = reduction();
  if (!red.deterministic()) {
    cuda::launch_layernorm_backward(dy, src, gamma, rs, d_residual, dx, dg, db, rows, cols, dt,
                                    as_stream(stream_));
    return;
  }
  // Deterministic: the fused kernel writes per-block partials and its last blocks add them in a
  // fixed order.
  const int64_t pg = cuda::layernorm_backward_partial_groups(rows, cols, dt, src);
  if (pg > 0) {
    const cuda::PartialSums sums = red.sums(2, pg, cols, dg, db, call);
    cuda::launch_layernorm_backward_partials(dy, src, gamma, rs, d_residual, dx, sums, rows, cols,
                                             dt, as_stream(stream_));
    return;
  }
  // Rows beyond the register path: the fused kernel's atomic column sums go to a discarded
  // workspace slice and the parameter gradients are summed in a fixed order
  // (layernorm_param_grad.cu).
  const int64_t groups = cuda::layernorm_param_grad_groups(rows, cols);
  float* scratch = red.rows(2 * groups * cols + 2 * cols, 1, call);
  float* discard = scratch + 2 * groups * cols;
  LS_CUDA_CALL(cudaMemsetAsync(discard, 0, 2 * cols * sizeof(float), as_stream(stream_)));
  cuda::launch_layernorm_backward(dy, src, gamma, rs, d_residual, dx, discard, discard + cols, rows,
                                  cols, dt, as_stream(stream_));
  cuda::launch_layernorm_param_grad(dy, src, gamma, rs, dg, db, rows, cols, dt, scratch,
                                    as_stream(stream_));
}

// ---------------------------------------------------------------- elementwise fusions
void CudaOps::bias_dropout_residual_forward(const void* x, const void* bias, const void* residual,
                                            void* out, int64_t rows, int64_t cols, float p,
                                            DropoutKey key, DType dt) {
  const char* call = "bias_dropout_residual_forward";
  check_working(dt, call);
  check_nonneg(rows, call, "rows");
  check_nonneg(cols, call, "cols");
  check_dropout(p, call);
  if (rows * cols == 0) return;
  check_ptr(x, call, "x");
  check_ptr(residual, call, "residual");
  check_ptr(out, call, "out");
  cuda::launch_bias_dropout_residual(x, bias, residual, out, rows, cols, p, key, dt,
                                     as_stream(stream_));
}

void CudaOps::bias_dropout_residual_layernorm_forward(const void* x, const void* bias,
                                                      const void* residual, void* out,
                                                      const void* gamma, const void* beta, void* y,
                                                      void* mean, void* rstd, int64_t rows,
                                                      int64_t cols, float p, DropoutKey key,
                                                      float eps, DType dt) {
  const char* call = "bias_dropout_residual_layernorm_forward";
  check_working(dt, call);
  check_residual_layernorm_args(x, residual, out, gamma, beta, y, mean, rstd, rows, cols, p, eps,
                                call);
  cuda::launch_bias_dropout_residual_layernorm(x, bias, residual, out, gamma, beta, y,
                                               static_cast<float*>(mean), static_cast<float*>(rstd),
                                               rows, cols, p, key, eps, dt, as_stream(stream_));
}

void CudaOps::dropout_bias_backward(const void* d_out, void* dx, void* d_bias, int64_t rows,
                                    int64_t cols, float p, DropoutKey key, DType dt) {
  const char* call = "dropout_bias_backward";
  check_working(dt, call);
  check_nonneg(rows, call, "rows");
  check_nonneg(cols, call, "cols");
  check_dropout(p, call);
  if (rows * cols == 0) return;
  check_ptr(d_out, call, "d_out");
  check_ptr(dx, call, "dx");
  cuda::launch_act_dropout_backward(d_out, nullptr, dx, static_cast<float*>(d_bias), rows, cols,
                                    cols, false, Activation::ReLU, p, key, dt, as_stream(stream_),
                                    reduction());
}

void CudaOps::act_dropout_forward(const void* pre, void* out, int64_t rows, int64_t cols,
                                  Activation act, float p, DropoutKey key, DType dt) {
  const char* call = "act_dropout_forward";
  check_working(dt, call);
  check_nonneg(rows, call, "rows");
  check_nonneg(cols, call, "cols");
  check_dropout(p, call);
  check_activation(act, call);
  if (rows * cols == 0) return;
  check_ptr(pre, call, "pre");
  check_ptr(out, call, "out");
  cuda::launch_act_dropout_forward(pre, out, rows, cols, act, p, key, dt, as_stream(stream_));
}

void CudaOps::act_dropout_backward(const void* d_out, const void* pre, void* d_pre, void* d_bias,
                                   int64_t rows, int64_t cols, Activation act, float p,
                                   DropoutKey key, DType dt) {
  const char* call = "act_dropout_backward";
  check_working(dt, call);
  check_nonneg(rows, call, "rows");
  check_nonneg(cols, call, "cols");
  check_dropout(p, call);
  check_activation(act, call);
  if (rows * cols == 0) return;
  check_ptr(d_out, call, "d_out");
  check_ptr(pre, call, "pre");
  check_ptr(d_pre, call, "d_pre");
  cuda::launch_act_dropout_backward(d_out, pre, d_pre, static_cast<float*>(d_bias), rows, cols,
                                    cols, true, act, p, key, dt, as_stream(stream_), reduction());
}

void CudaOps::relu_dropout_backward_from_output(const void* d_out, const void* out, void* d_pre,
                                                void* d_bias, int64_t rows, int64_t cols, float p,
                                                DType dt) {
  const char* call = "relu_dropout_backward_from_output";
  check_working(dt, call);
  check_nonneg(rows, call, "rows");
  check_nonneg(cols, call, "cols");
  check_dropout(p, call);
  if (rows * cols == 0) return;
  check_ptr(d_out, call, "d_out");
  check_ptr(out, call, "out");
  check_ptr(d_pre, call, "d_pre");
  cuda::launch_relu_dropout_backward_from_output(d_out, out, d_pre, static_cast<float*>(d_bias),
                                                 rows, cols, cols, p, dt, as_stream(stream_),
                                                 reduction());
}

void CudaOps::dropout_forward(const void* x, void* out, size_t n, float p, DropoutKey key,
                              DType dt) {
  const char* call = "dropout_forward";
  check_working(dt, call);
  check_dropout(p, call);
  if (n == 0) return;
  check_ptr(x, call, "x");
  check_ptr(out, call, "out");
  cuda::launch_dropout_forward(x, out, n, p, key, dt, as_stream(stream_));
}

void CudaOps::bias_grad(const void* dy, void* d_bias, int64_t rows, int64_t cols, DType dt) {
  const char* call = "bias_grad";
  check_working(dt, call);
  check_nonneg(rows, call, "rows");
  check_nonneg(cols, call, "cols");
  if (rows * cols == 0) return;
  check_ptr(dy, call, "dy");
  check_ptr(d_bias, call, "d_bias");
  cuda::launch_bias_grad(dy, static_cast<float*>(d_bias), rows, cols, cols, dt, as_stream(stream_),
                         reduction());
}

// ---------------------------------------------------------------- attention
void CudaOps::split_heads(const void* in, const void* bias, void* out, int64_t n, int64_t batch,
                          int64_t len, int64_t heads, int64_t head_dim, DType dt) {
  const char* call = "split_heads";
  check_working(dt, call);
  for (auto v : {n, batch, len, heads, head_dim}) check_nonneg(v, call, "a dimension");
  if (n * batch * len * heads * head_dim == 0) return;
  check_ptr(in, call, "in");
  check_ptr(out, call, "out");
  cuda::launch_split_heads(in, bias, out, n, batch, len, heads, head_dim, dt, as_stream(stream_));
}

void CudaOps::merge_heads(const void* in, void* out, int64_t n, int64_t batch, int64_t len,
                          int64_t heads, int64_t head_dim, DType dt) {
  const char* call = "merge_heads";
  check_working(dt, call);
  for (auto v : {n, batch, len, heads, head_dim}) check_nonneg(v, call, "a dimension");
  if (n * batch * len * heads * head_dim == 0) return;
  check_ptr(in, call, "in");
  check_ptr(out, call, "out");
  cuda::launch_merge_heads(in, out, n, batch, len, heads, head_dim, dt, as_stream(stream_));
}

void CudaOps::softmax_forward(const void* scores, void* probs, const uint8_t* key_pad, bool causal,
                              int64_t batch, int64_t heads, int64_t len_q, int64_t len_k,
                              DType dt) {
  const char* call = "softmax_forward";
  check_working(dt, call);
  for (auto v : {batch, heads, len_q, len_k}) check_nonneg(v, call, "a dimension");
  if (batch * heads * len_q * len_k == 0) return;
  check_ptr(scores, call, "scores");
  check_ptr(probs, call, "probs");
  LS_CHECK_ARG(len_q <= INT32_MAX && batch * heads * len_q <= INT32_MAX, call << ": too many rows");
  cuda::launch_softmax_forward(scores, probs, key_pad, causal, batch, heads, len_q, len_k, dt,
                               as_stream(stream_));
}

void CudaOps::attention_forward(const AttentionArgs& a) {
  const char* call = "attention_forward";
  check_working(a.dt, call);
  if (!check_attention_args(a, call)) return;
  cuda::launch_attention_forward(a, as_stream(stream_));
}

void CudaOps::attention_backward(const AttentionArgs& a, const void* d_ctx, void* dq, void* dk,
                                 void* dv, void* delta, void* d_bias) {
  check_working(a.dt, "attention_backward");
  if (!check_attention_backward_args(a, d_ctx, dq, dk, dv, delta)) return;
  cuda::launch_attention_backward(a, d_ctx, dq, dk, dv, static_cast<float*>(delta),
                                  static_cast<float*>(d_bias), as_stream(stream_), reduction());
}

void CudaOps::softmax_backward(const void* d_dropped, const void* probs, void* d_scores,
                               int64_t rows, int64_t len_k, float p, DropoutKey key, DType dt) {
  const char* call = "softmax_backward";
  check_working(dt, call);
  check_nonneg(rows, call, "rows");
  check_nonneg(len_k, call, "len_k");
  check_dropout(p, call);
  if (rows * len_k == 0) return;
  check_ptr(d_dropped, call, "d_dropped");
  check_ptr(probs, call, "probs");
  check_ptr(d_scores, call, "d_scores");
  LS_CHECK_ARG(rows <= INT32_MAX, call << ": too many rows");
  cuda::launch_softmax_backward(d_dropped, probs, d_scores, rows, len_k, p, key, dt,
                                as_stream(stream_));
}

// ---------------------------------------------------------------- criterion
namespace {
// The checks every criterion call makes; false: no rows, nothing to do.
bool check_criterion_args(const char* call, DType dt, int64_t rows, int64_t vocab,
                          const void* logits, const int32_t* targets, const void* lse) {
  check_working(dt, call);
  check_nonneg(rows, call, "rows");
  LS_CHECK_ARG(vocab >= 2, call << ": vocab = " << vocab << " must be >= 2");
  if (rows == 0) return false;
  check_ptr(logits, call, "logits");
  check_ptr(targets, call, "targets");
  check_ptr(lse, call, "lse");
  LS_CHECK_ARG(rows <= INT32_MAX, call << ": too many rows");
  return true;
}
}  // namespace

void CudaOps::cross_entropy_forward(const void* logits, const int32_t* targets, void* lse,
                                    void* sums, int64_t rows, int64_t vocab, int32_t padding_idx,
                                    float eps, DType dt) {
  const char* call = "cross_entropy_forward";
  if (!check_criterion_args(call, dt, rows, vocab, logits, targets, lse)) return;
  check_ptr(sums, call, "sums");
  cuda::launch_cross_entropy_forward(logits, targets, static_cast<float*>(lse),
                                     static_cast<float*>(sums), rows, vocab, padding_idx, eps, dt,
                                     as_stream(stream_), reduction());
}

void CudaOps::cross_entropy_backward(const void* logits, const int32_t* targets, const void* lse,
                                     const void* grad_scale_dev, void* d_logits, int64_t rows,
                                     int64_t vocab, int32_t padding_idx, float eps, DType dt) {
  const char* call = "cross_entropy_backward";
  if (!check_criterion_args(call, dt, rows, vocab, logits, targets, lse)) return;
  check_ptr(grad_scale_dev, call, "grad_scale_dev");
  check_ptr(d_logits, call, "d_logits");
  cuda::launch_cross_entropy_backward(logits, targets, static_cast<const float*>(lse),
                                      static_cast<const float*>(grad_scale_dev), d_logits, rows,
                                      vocab, padding_idx, eps, dt, as_stream(stream_));
}

void CudaOps::cross_entropy_forward_backward(const void* logits, const int32_t* targets, void* lse,
                                             void* sums, const void* grad_scale_dev, void* d_logits,
                                             int64_t rows, int64_t vocab, int32_t padding_idx,
                                             float eps, DType dt) {
  const char* call = "cross_entropy_forward_backward";
  if (!check_criterion_args(call, dt, rows, vocab, logits, targets, lse)) return;
  check_ptr(sums, call, "sums");
  check_ptr(grad_scale_dev, call, "grad_scale_dev");
  check_ptr(d_logits, call, "d_logits");
  cuda::launch_cross_entropy_forward_backward(
      logits, targets, static_cast<float*>(lse), static_cast<float*>(sums),
      static_cast<const float*>(grad_scale_dev), d_logits, rows, vocab, padding_idx, eps, dt,
      as_stream(stream_), reduction());
}

// ---------------------------------------------------------------- optimizer
void CudaOps::sum_squares(const void* x, size_t n, void* out, DType acc) {
  cuda::require_acc_f32(acc, "sum_squares");
  if (n == 0) return;
  check_ptr(x, "sum_squares", "x");
  check_ptr(out, "sum_squares", "out");
  cuda::launch_sum_squares(static_cast<const float*>(x), n, static_cast<float*>(out),
                           as_stream(stream_), reduction());
}

void CudaOps::update_control(const void* sumsq_dev, void* tokens_dev,
                             const UpdateControlArgs& args, TrainState* state_dev,
                             void* grad_scale_dev, DType acc) {
  const char* call = "update_control";
  cuda::require_acc_f32(acc, call);
  check_ptr(sumsq_dev, call, "sumsq_dev");
  check_ptr(tokens_dev, call, "tokens_dev");
  check_ptr(state_dev, call, "state_dev");
  check_ptr(grad_scale_dev, call, "grad_scale_dev");
  cuda::launch_update_control(static_cast<const float*>(sumsq_dev),
                              static_cast<float*>(tokens_dev), args, state_dev,
                              static_cast<float*>(grad_scale_dev), as_stream(stream_));
}

void CudaOps::adam_update(void* params, const void* grads, void* m, void* v, void* work,
                          DType work_t, size_t n, const AdamArgs& h, const AdamStep* step_dev,
                          DType acc) {
  const char* call = "adam_update";
  cuda::require_acc_f32(acc, call);
  if (work != nullptr) check_working(work_t, call);
  check_ptr(step_dev, call, "step_dev");
  if (n == 0) return;
  check_ptr(params, call, "params");
  check_ptr(grads, call, "grads");
  check_ptr(m, call, "m");
  check_ptr(v, call, "v");
  cuda::launch_adam_update(static_cast<float*>(params), static_cast<const float*>(grads),
                           static_cast<float*>(m), static_cast<float*>(v), work,
                           work != nullptr ? work_t : DType::F32, n, h, step_dev,
                           as_stream(stream_));
}

// ---------------------------------------------------------------- inputs and counters
void CudaOps::import_tokens(const int32_t* src, int32_t* dst, int64_t n, int32_t vocab,
                            int32_t padding_idx, uint32_t* bad_count_dev) {
  const char* call = "import_tokens";
  check_nonneg(n, call, "n");
  check_ptr(bad_count_dev, call, "bad_count_dev");
  if (n == 0) return;
  check_ptr(src, call, "src");
  check_ptr(dst, call, "dst");
  cuda::launch_import_tokens(src, dst, n, vocab, padding_idx, bad_count_dev, as_stream(stream_));
}
void CudaOps::padding_mask(const int32_t* tokens, uint8_t* mask, int64_t n, int32_t padding_idx) {
  check_nonneg(n, "padding_mask", "n");
  if (n == 0) return;
  check_ptr(tokens, "padding_mask", "tokens");
  check_ptr(mask, "padding_mask", "mask");
  cuda::launch_padding_mask(tokens, mask, n, padding_idx, as_stream(stream_));
}
void CudaOps::counter_add(uint64_t* counter, uint64_t v) {
  check_ptr(counter, "counter_add", "counter");
  cuda::launch_counter_add(counter, v, as_stream(stream_));
}
void CudaOps::scalar_accumulate(void* sum, const void* x, DType acc) {
  cuda::require_acc_f32(acc, "scalar_accumulate");
  check_ptr(sum, "scalar_accumulate", "sum");
  check_ptr(x, "scalar_accumulate", "x");
  cuda::launch_scalar_accumulate(static_cast<float*>(sum), static_cast<const float*>(x),
                                 as_stream(stream_));
}

// ---------------------------------------------------------------- host memory, capture
void* CudaOps::host_alloc(size_t bytes) {
  void* p = nullptr;
  LS_CUDA_CALL(cudaMallocHost(&p, bytes == 0 ? 1 : bytes));
  return p;
}
void CudaOps::host_free(void* p) {
  if (p != nullptr) cudaFreeHost(p);  // no throw: called from destructors
}
void CudaOps::capture_begin() {
  LS_CUDA_CALL(cudaStreamBeginCapture(as_stream(stream_), cudaStreamCaptureModeThreadLocal));
}
void* CudaOps::capture_end() {
  cudaGraph_t graph = nullptr;
  LS_CUDA_CALL(cudaStreamEndCapture(as_stream(stream_), &graph));
  cudaGraphExec_t exec = nullptr;
  cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  LS_REQUIRE(err == cudaSuccess, LS_ERR_CUDA,
             "cudaGraphInstantiate failed: " << cudaGetErrorString(err));
  return exec;
}
void CudaOps::graph_launch(void* graph) {
  check_ptr(graph, "graph_launch", "graph");
  LS_CUDA_CALL(cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph), as_stream(stream_)));
}
void CudaOps::graph_destroy(void* graph) {
  if (graph != nullptr) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph));
}
void CudaOps::mark() {
  LS_CUDA_CALL(cudaEventRecord(static_cast<cudaEvent_t>(mark_), as_stream(stream_)));
}
void CudaOps::wait_mark() {
  LS_CUDA_CALL(cudaEventSynchronize(static_cast<cudaEvent_t>(mark_)));
}

std::unique_ptr<Ops> make_cuda_ops(int device, void* stream) {
  return std::unique_ptr<Ops>(new CudaOps(device, stream));
}

}  // namespace ls
