// Host-side launchers of the CUDA kernels, one group per .cu file. CudaOps (cuda_ops.cu) checks
// arguments and forwards here; each launcher enqueues on `stream` and allocates nothing.
// Semantics are those of the same-named Ops method in layers/kernels/ops.h.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "layers/kernels/ops.h"

namespace ls {
namespace cuda {

// Deterministic column sums finished by the last blocks of the producing kernel
// (partial_sums.cuh): rows[a][g][c] for a < arrays, g < groups, c < cols; out[a][c] += the
// column's sum over g in a fixed order. rows == null: not deterministic (atomics).
struct PartialSums {
  float* rows = nullptr;
  unsigned* sync = nullptr;
  float* out[2] = {nullptr, nullptr};
  int arrays = 1;
  int64_t groups = 0, cols = 0;
};

// How a kernel adds its partial sums into fp32 outputs. Default (no scratch): fp32 atomics, fast
// but the summation order (hence the last bits) varies run to run. With scratch (deterministic
// mode): every block writes its partials to scratch rows and reduce.cu adds the rows in a fixed
// order, so results are bitwise reproducible. Scratch is the backend's workspace (stream order
// keeps its users apart); a launch that needs more than `capacity` floats throws.
// PartialSums (above) adds the rows inside the producing kernel; the kernels without it still
// call launch_sum_partials.
struct Reduction {
  float* scratch = nullptr;
  size_t capacity = 0;      // floats
  unsigned* sync = nullptr;  // two zeroed counters for PartialSums (the backend's, per stream)
  bool deterministic() const { return scratch != nullptr; }
  float* rows(int64_t groups, int64_t cols, const char* call) const;
  // Scratch rows [arrays][groups][cols] and the outputs (out1: arrays == 2) of a fixed-order
  // sum finished in-kernel (partial_sums.cuh); deterministic mode only.
  PartialSums sums(int arrays, int64_t groups, int64_t cols, float* out0, float* out1,
                   const char* call) const;
};

// What the LayerNorm backward (layernorm.cu, layernorm_param_grad.cu) computes xhat from: the
// forward's input and saved mean, xhat = (x - mean) * rstd (layernorm_backward); or, with
// from_output, its output and beta, xhat = (y - beta) / gamma (layernorm_backward_from_output).
// From the input, y may be set: the backward then also writes the forward's output
// y = (x - mean) * rstd * gamma + beta into it, bit for bit the forward's (beta read).
struct LnXhatSource {
  const void* xy = nullptr;     // x, or y with from_output: [rows, cols] (dt)
  const float* mean = nullptr;  // [rows]; read only from the input
  const void* beta = nullptr;   // [cols] (dt); read from the output, or with y
  bool from_output = false;
  void* y = nullptr;  // [rows, cols] (dt): the recomputed output (from the input only), or null
};

// layernorm.cu, deterministic mode: the fused backward with d_gamma/d_beta written as per-block
// partials [2][groups][cols] (d_gamma's rows, then d_beta's) that its last blocks add in a fixed
// order (sums: arrays 2, out d_gamma and d_beta); groups == 0: cols beyond the register path
// (then layernorm_param_grad.cu computes them). The groups depend on from_output (the two
// variants' blocks take different shared memory, hence occupancy).
int64_t layernorm_backward_partial_groups(int64_t rows, int64_t cols, DType dt,
                                          const LnXhatSource& src);
void launch_layernorm_backward_partials(const void* dy, const LnXhatSource& src, const void* gamma,
                                        const float* rstd, const void* d_residual, void* dx,
                                        const PartialSums& sums, int64_t rows, int64_t cols,
                                        DType dt, cudaStream_t s);

// layernorm_param_grad.cu (deterministic mode, rows longer than the register path): d_gamma/d_beta
// [cols] += fixed-order column sums; partials: 2 * layernorm_param_grad_groups(rows, cols) * cols
// floats of scratch.
void launch_layernorm_param_grad(const void* dy, const LnXhatSource& src, const void* gamma,
                                 const float* rstd, float* d_gamma, float* d_beta, int64_t rows,
                                 int64_t cols, DType dt, float* partials, cudaStream_t s);
int64_t layernorm_param_grad_groups(int64_t rows, int64_t cols);

// reduce.cu: out[c] += sum over g (in order) of partials[g * cols + c].
void launch_sum_partials(const float* partials, int64_t groups, int64_t cols, float* out,
                         cudaStream_t s);

// gemm_lt.cu: GEMMs through cuBLASLt with a per-shape plan cache (see the file comment).
class LtGemm {
 public:
  LtGemm();
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;
  // Workspace for cuBLASLt and for the bias-gradient slice of fused DActBGrad; may be null.
  void set_workspace(void* p, size_t bytes);
  // false: never use cuBLASLt's fused epilogues (plain GEMM + own kernels); for testing both.
  void set_fused_epilogues(bool on);
  // fp32 GEMMs may use TF32 tensor cores (default true); false: full fp32 (plans rebuilt).
  void set_allow_tf32(bool on);
  // Autotuning (default false): a plan's first beta == 0 call outside stream capture times the
  // heuristic's candidates and keeps the fastest (gemm_lt.cu). Plans are rebuilt.
  void set_autotune(bool on);
  // Number of plans autotuned so far.
  size_t tuned_plans() const;
  // Number of cached plans (each was created once, with host allocations, on first use).
  size_t plan_count() const;
  // Number of calls so far whose epilogue ran fused in cuBLASLt.
  size_t fused_calls() const;
  // red: how the fallback epilogue kernels (no fused cuBLASLt epilogue for a shape) add column
  // sums; deterministic reductions use the same workspace after the GEMM is done with it.
  void run(const GemmArgs& g, cudaStream_t s, const Reduction& red = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// zero_ranges.cu: zeroes elements [ranges[2i], ranges[2i+1]) of elem_bytes (4 or 8) from base,
// i < count; ranges in device memory; max_elements bounds each range's length.
void launch_zero_ranges(void* base, const uint64_t* ranges, int64_t count, uint64_t max_elements,
                        size_t elem_bytes, cudaStream_t s);

// cast.cu
void launch_cast(const void* src, DType src_t, void* dst, DType dst_t, size_t n, cudaStream_t s);
void launch_add_inplace(void* y, const void* x, DType t, size_t n, cudaStream_t s);
// bias [n] (type dt) added to every row of c [rows, n] (ld ldc) of type c_t.
void launch_add_bias_rows(void* c, DType c_t, int64_t ldc, const void* bias, DType dt, int64_t rows,
                          int64_t n, cudaStream_t s);
// dst[i] += src[i] (src of type src_t, dst fp32), n elements.
void launch_accumulate_f32(float* dst, const void* src, DType src_t, size_t n, cudaStream_t s);

// embedding.cu
// scratch (may be null): room for the [len, dim] fp32 sinusoid rows, used when it fits and the
// positions are sinusoidal; its contents are overwritten.
void launch_embedding_forward(const EmbeddingArgs& a, const void* table, void* out, float* scratch,
                              size_t scratch_bytes, cudaStream_t s);
void launch_embedding_backward(const EmbeddingArgs& a, const void* d_out, float* d_table,
                               float* d_positions, bool deterministic, cudaStream_t s);

// layernorm.cu
void launch_layernorm_forward(const void* x, const void* gamma, const void* beta, void* y,
                              float* mean, float* rstd, int64_t rows, int64_t cols, float eps,
                              DType dt, cudaStream_t s);
void launch_layernorm_backward(const void* dy, const LnXhatSource& src, const void* gamma,
                               const float* rstd, const void* d_residual, void* dx, float* d_gamma,
                               float* d_beta, int64_t rows, int64_t cols, DType dt, cudaStream_t s);

// residual_layernorm.cu: launch_bias_dropout_residual then launch_layernorm_forward of its
// output, in one kernel where the shapes allow (fp16/bf16, cols % 8 == 0, cols <= 2048, aligned).
void launch_bias_dropout_residual_layernorm(const void* x, const void* bias, const void* residual,
                                            void* out, const void* gamma, const void* beta, void* y,
                                            float* mean, float* rstd, int64_t rows, int64_t cols,
                                            float p, DropoutKey key, float eps, DType dt,
                                            cudaStream_t s);

// dropout_fusions.cu
void launch_bias_dropout_residual(const void* x, const void* bias, const void* residual, void* out,
                                  int64_t rows, int64_t cols, float p, DropoutKey key, DType dt,
                                  cudaStream_t s);
void launch_act_dropout_forward(const void* pre, void* out, int64_t rows, int64_t cols,
                                Activation act, float p, DropoutKey key, DType dt, cudaStream_t s);
// d_pre = [act'(pre) *] dropout_bwd(d_out), d_bias += column sums (when non-null).
// has_act false: dropout_bias_backward. pre/d_out/d_pre rows use leading dimension ld.
void launch_act_dropout_backward(const void* d_out, const void* pre, void* d_pre, float* d_bias,
                                 int64_t rows, int64_t cols, int64_t ld, bool has_act,
                                 Activation act, float p, DropoutKey key, DType dt, cudaStream_t s,
                                 const Reduction& red = {});
// d_pre = d_out * (out > 0 ? 1/(1-p) : 0) with out the output of dropout(relu(pre)) (no mask
// drawn), d_bias += column sums (when non-null). out/d_out/d_pre rows use leading dimension ld.
void launch_relu_dropout_backward_from_output(const void* d_out, const void* out, void* d_pre,
                                              float* d_bias, int64_t rows, int64_t cols,
                                              int64_t ld, float p, DType dt, cudaStream_t s,
                                              const Reduction& red = {});
void launch_dropout_forward(const void* x, void* out, size_t n, float p, DropoutKey key, DType dt,
                            cudaStream_t s);
// d_bias [cols] += column sums of dy [rows, cols] with leading dimension ld.
void launch_bias_grad(const void* dy, float* d_bias, int64_t rows, int64_t cols, int64_t ld,
                      DType dt, cudaStream_t s, const Reduction& red = {});
// d_bias [rows] += row sums of a [rows, cols] with leading dimension ld.
void launch_row_sums(const void* a, float* d_bias, int64_t rows, int64_t cols, int64_t ld, DType dt,
                     cudaStream_t s);
// out[i] = act(in[i]) over a [rows, cols] matrix with leading dimension ld (in may alias out).
void launch_activation(const void* in, void* out, int64_t rows, int64_t cols, int64_t ld,
                       Activation act, DType dt, cudaStream_t s);

// attention_heads.cu
void launch_split_heads(const void* in, const void* bias, void* out, int64_t n, int64_t batch,
                        int64_t len, int64_t heads, int64_t head_dim, DType dt, cudaStream_t s);
void launch_merge_heads(const void* in, void* out, int64_t n, int64_t batch, int64_t len,
                        int64_t heads, int64_t head_dim, DType dt, cudaStream_t s);

// flash_attention.cu (fp16/bf16, head_dim a multiple of 8 up to kFusedAttentionMaxHeadDim;
// the launchers check dtype, strides, alignment and the architecture).
void launch_attention_forward(const AttentionArgs& a, cudaStream_t s);
void launch_attention_backward(const AttentionArgs& a, const void* d_ctx, void* dq, void* dk,
                               void* dv, float* delta, float* d_bias, cudaStream_t s,
                               const Reduction& red);

// softmax.cu
void launch_softmax_forward(const void* scores, void* probs, const uint8_t* key_pad, bool causal,
                            int64_t batch, int64_t heads, int64_t len_q, int64_t len_k, DType dt,
                            cudaStream_t s);
void launch_softmax_backward(const void* d_dropped, const void* probs, void* d_scores, int64_t rows,
                             int64_t len_k, float p, DropoutKey key, DType dt, cudaStream_t s);

// cross_entropy.cu
void launch_cross_entropy_forward(const void* logits, const int32_t* targets, float* lse,
                                  float* sums, int64_t rows, int64_t vocab, int32_t padding_idx,
                                  float eps, DType dt, cudaStream_t s, const Reduction& red = {});
void launch_cross_entropy_backward(const void* logits, const int32_t* targets, const float* lse,
                                   const float* grad_scale_dev, void* d_logits, int64_t rows,
                                   int64_t vocab, int32_t padding_idx, float eps, DType dt,
                                   cudaStream_t s);
// The forward and the backward in one pass over the logits where the forward's register path
// applies (the logits held in registers, d_logits written from them after the row's lse);
// otherwise the two kernels above. Same results as the two, bit for bit.
void launch_cross_entropy_forward_backward(const void* logits, const int32_t* targets, float* lse,
                                           float* sums, const float* grad_scale_dev, void* d_logits,
                                           int64_t rows, int64_t vocab, int32_t padding_idx,
                                           float eps, DType dt, cudaStream_t s,
                                           const Reduction& red = {});

// adam.cu
void launch_sum_squares(const float* x, size_t n, float* out, cudaStream_t s,
                        const Reduction& red = {});
void launch_adam_update(float* params, const float* grads, float* m, float* v, void* work,
                        DType work_t, size_t n, const Ops::AdamArgs& h, const AdamStep* step_dev,
                        cudaStream_t s);

// train_control.cu
void launch_update_control(const float* sumsq_dev, float* tokens_dev, const UpdateControlArgs& args,
                           TrainState* state_dev, float* grad_scale_dev, cudaStream_t s);

// inputs.cu
void launch_import_tokens(const int32_t* src, int32_t* dst, int64_t n, int32_t vocab,
                          int32_t padding_idx, uint32_t* bad_count_dev, cudaStream_t s);
void launch_padding_mask(const int32_t* tokens, uint8_t* mask, int64_t n, int32_t padding_idx,
                         cudaStream_t s);
void launch_counter_add(uint64_t* counter, uint64_t v, cudaStream_t s);
void launch_scalar_accumulate(float* sum, const float* x, cudaStream_t s);

}  // namespace cuda
}  // namespace ls
